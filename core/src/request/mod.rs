//! Environment requests from GitHub issues: the issue form as GitHub renders
//! it, the checks a request must pass before anything is built, the catalog
//! file it becomes, the preview a maintainer reviews, the slash commands they
//! answer with, and the markdown of every comment the bot writes.
//!
//! Pure, like the rest of the core: the hub hands in the issue body, the
//! catalog and the templates, and gets values and markdown back. The issue
//! text is hostile input: it never reaches a Dockerfile except as validated
//! package names in context files (see `render`), and it never reaches a
//! comment except inside code spans or code blocks (see [`comment`]).

use std::fmt;

pub mod command;
pub mod comment;
pub mod entry;
pub mod form;
mod text;
pub mod typosquat;
pub mod validate;

pub use command::Command;
pub use comment::Published;
pub use entry::Preview;
pub use form::Form;
pub use validate::validate;

/// Something in the issue that stops the request, with where it is so the
/// requester can fix it by editing the issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The form label (as the issue shows it), or `"body"` for the issue as a whole.
    pub field: String,
    /// 1-based line within the field's value (the text the requester typed).
    pub line: Option<usize>,
    /// The offending text, with invisible and (in names) non-ASCII characters
    /// written as `\u{…}`, cut to a readable length. Comments show it in a
    /// code span.
    pub token: Option<String>,
    /// Completes the sentence "<token> …" (or "<field>: …" without a token):
    /// lowercase, no trailing period, says what is allowed.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(field: &str, message: impl Into<String>) -> Problem {
        Problem {
            field: field.to_string(),
            line: None,
            token: None,
            message: message.into(),
        }
    }

    pub(crate) fn at(mut self, line: usize) -> Problem {
        self.line = Some(line);
        self
    }

    pub(crate) fn token(mut self, token: &str, ascii_only: bool) -> Problem {
        self.token = Some(text::visible(token, ascii_only));
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The message completes a sentence about the token, or about the
        // field when there is none: "Why is required".
        f.write_str(&self.field)?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        match &self.token {
            Some(token) => write!(f, ": {token:?} {}", self.message),
            None if self.line.is_some() => write!(f, ": {}", self.message),
            None => write!(f, " {}", self.message),
        }
    }
}

/// Something that is valid but needs a human look before approval (a
/// possible typosquat, for example). Flags do not stop the preview; they add
/// the `needs-review` label and a warning to the comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// The form label.
    pub field: String,
    /// The value the flag is about (validated, so plain ASCII).
    pub token: String,
    /// Completes the sentence "<token> …".
    pub message: String,
}

/// A request that passed every check: only validated values, ready to be
/// written as a catalog file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub issue: u64,
    /// The environment (image) name, following `formats::slug`.
    pub slug: String,
    /// A concrete catalog image name.
    pub based_on: String,
    pub gpu: bool,
    /// Normalised requirement lines (`Requirement::to_line`).
    pub pip: Vec<String>,
    /// Debian package names, optionally `name=version`.
    pub apt: Vec<String>,
    /// Open VSX ids (`publisher.name`, optionally `@x.y.z`).
    pub vscode: Vec<String>,
    /// The group that may see the environment (`formats::group`); `None`: everyone.
    pub course: Option<String>,
    /// Free text from the requester: only ever shown in code blocks, never
    /// written into the catalog.
    pub why: String,
    /// The GitHub login that opened the issue.
    pub author: String,
}

/// Sizes above which a request is refused outright: they keep parsing cheap
/// and comments readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The issue body, in bytes; larger bodies are not parsed at all.
    pub body_bytes: usize,
    /// Entries in one package or extension list.
    pub packages_per_field: usize,
    /// Characters of one package, extension, name or group.
    pub token_chars: usize,
    /// Characters of the `Why` text.
    pub why_chars: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            body_bytes: 65536,
            packages_per_field: 100,
            token_chars: 200,
            why_chars: 4000,
        }
    }
}

/// The result of checking an issue body: a request, or every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    /// `None` exactly when `problems` is not empty.
    pub request: Option<Request>,
    pub problems: Vec<Problem>,
    pub flags: Vec<Flag>,
}

#[cfg(test)]
mod tests;
