//! Python package versions (PEP 440) and project names (PEP 503).
//!
//! Parsing accepts exactly what `packaging.version.Version` accepts (case,
//! a leading `v`, `-`/`_`/`.` separators, alternate spellings such as
//! `alpha`, `preview`, `rev`, implicit post releases `1.0-1`, surrounding
//! whitespace) and the ordering is its ordering: dev releases before
//! pre-releases before the release before post releases, a local version
//! after its public version, trailing zeros of the release ignored. Legacy
//! (non PEP 440) strings are an error.
//!
//! Pure: no I/O. Used by the OSV matcher for `PyPI` advisories and by the
//! package diff.

use std::cmp::Ordering;
use std::fmt;

use thiserror::Error;

/// Why a string is not a PEP 440 version.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VersionError {
    #[error("'{version}' is not a PEP 440 version: {why}")]
    Invalid { version: String, why: &'static str },
}

/// A non-negative integer of any size, compared by value.
#[derive(Debug, Clone)]
enum Num {
    /// Fits: at most 19 digits.
    Small(u64),
    /// More than 19 digits, without leading zeros.
    Big(Box<str>),
}

impl Num {
    fn from_digits(digits: &str) -> Num {
        let stripped = digits.trim_start_matches('0');
        if stripped.len() <= 19 {
            // At most 19 ASCII digits always fit in a u64.
            Num::Small(stripped.parse().unwrap_or(0))
        } else {
            Num::Big(stripped.into())
        }
    }

    fn is_zero(&self) -> bool {
        matches!(self, Num::Small(0))
    }
}

impl Ord for Num {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Num::Small(a), Num::Small(b)) => a.cmp(b),
            (Num::Small(_), Num::Big(_)) => Ordering::Less,
            (Num::Big(_), Num::Small(_)) => Ordering::Greater,
            (Num::Big(a), Num::Big(b)) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
        }
    }
}

impl PartialOrd for Num {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Num {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Num {}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Num::Small(n) => write!(f, "{n}"),
            Num::Big(s) => f.write_str(s),
        }
    }
}

/// The pre-release phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PreKind {
    Alpha,
    Beta,
    Rc,
}

impl PreKind {
    fn as_str(self) -> &'static str {
        match self {
            PreKind::Alpha => "a",
            PreKind::Beta => "b",
            PreKind::Rc => "rc",
        }
    }
}

/// One part of a local version label: numbers sort after strings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum LocalPart {
    Str(String),
    Num(Num),
}

/// A PEP 440 version. Equality is the spec's, not the text's: `1.0`,
/// `1.0.0` and `v1.0` are equal, and so are `1.0a` and `1.0a0`.
#[derive(Debug, Clone)]
pub struct Version {
    epoch: Num,
    release: Vec<Num>,
    pre: Option<(PreKind, Num)>,
    post: Option<Num>,
    dev: Option<Num>,
    local: Vec<LocalPart>,
}

/// Where the pre-release sits in the ordering.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum PreKey<'a> {
    /// `1.0.dev1`: a dev release of the release itself sorts before its
    /// pre-releases.
    DevOnly,
    Pre(PreKind, &'a Num),
    /// No pre-release.
    None,
}

/// Where the dev release sits: a dev release before the plain one.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum DevKey<'a> {
    Dev(&'a Num),
    None,
}

impl Version {
    /// Parses a version the way `packaging.version.Version` does.
    pub fn parse(s: &str) -> Result<Version, VersionError> {
        let invalid = |why| VersionError::Invalid {
            version: s.to_string(),
            why,
        };
        let text = s.trim();
        if text.is_empty() {
            return Err(invalid("it is empty"));
        }
        if !text.is_ascii() {
            return Err(invalid("it has non-ASCII characters"));
        }
        let lower = text.to_ascii_lowercase();
        let mut p = Cursor {
            s: lower.as_bytes(),
            i: 0,
        };
        p.eat(b"v");

        // Epoch and release: `[N!]N(.N)*`.
        let first = p
            .digits()
            .ok_or_else(|| invalid("it does not start with a number"))?;
        let (epoch, first) = if p.eat(b"!") {
            let release = p
                .digits()
                .ok_or_else(|| invalid("no release number after the epoch"))?;
            (Num::from_digits(first), release)
        } else {
            (Num::Small(0), first)
        };
        let mut release = vec![Num::from_digits(first)];
        loop {
            let save = p.i;
            if p.eat(b".")
                && let Some(n) = p.digits()
            {
                release.push(Num::from_digits(n));
                continue;
            }
            p.i = save;
            break;
        }

        // Pre-release: `[-_.]?(alpha|a|beta|b|preview|pre|c|rc)[-_.]?N?`.
        let pre = p.labelled(&[
            ("alpha", PreKind::Alpha),
            ("a", PreKind::Alpha),
            ("beta", PreKind::Beta),
            ("b", PreKind::Beta),
            ("preview", PreKind::Rc),
            ("pre", PreKind::Rc),
            ("c", PreKind::Rc),
            ("rc", PreKind::Rc),
        ]);

        // Post release: `-N` or `[-_.]?(post|rev|r)[-_.]?N?`.
        let post = {
            let save = p.i;
            let implicit = if p.eat(b"-") { p.digits() } else { None };
            match implicit {
                Some(n) => Some(Num::from_digits(n)),
                None => {
                    p.i = save;
                    p.labelled(&[("post", ()), ("rev", ()), ("r", ())])
                        .map(|((), n)| n)
                }
            }
        };

        // Dev release: `[-_.]?dev[-_.]?N?`.
        let dev = p.labelled(&[("dev", ())]).map(|((), n)| n);

        // Local version: `+[a-z0-9]+([-_.][a-z0-9]+)*`.
        let mut local = Vec::new();
        if p.eat(b"+") {
            loop {
                let part = p.take_while(|b| b.is_ascii_alphanumeric());
                if part.is_empty() {
                    return Err(invalid("empty part in the local version"));
                }
                local.push(if part.bytes().all(|b| b.is_ascii_digit()) {
                    LocalPart::Num(Num::from_digits(part))
                } else {
                    LocalPart::Str(part.to_string())
                });
                if !p.eat_sep() {
                    break;
                }
            }
        }
        if p.i != p.s.len() {
            return Err(invalid("unexpected characters"));
        }
        Ok(Version {
            epoch,
            release,
            pre,
            post,
            dev,
            local,
        })
    }

    pub fn is_prerelease(&self) -> bool {
        self.pre.is_some() || self.dev.is_some()
    }

    pub fn is_postrelease(&self) -> bool {
        self.post.is_some()
    }

    pub fn is_devrelease(&self) -> bool {
        self.dev.is_some()
    }

    /// The release without the trailing zeros, which do not count.
    fn release_key(&self) -> &[Num] {
        let len = self
            .release
            .iter()
            .rposition(|n| !n.is_zero())
            .map_or(0, |i| i + 1);
        &self.release[..len]
    }

    fn pre_key(&self) -> PreKey<'_> {
        match (&self.pre, &self.post, &self.dev) {
            (None, None, Some(_)) => PreKey::DevOnly,
            (Some((kind, n)), _, _) => PreKey::Pre(*kind, n),
            (None, _, _) => PreKey::None,
        }
    }

    fn dev_key(&self) -> DevKey<'_> {
        match &self.dev {
            Some(n) => DevKey::Dev(n),
            None => DevKey::None,
        }
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| self.release_key().cmp(other.release_key()))
            .then_with(|| self.pre_key().cmp(&other.pre_key()))
            .then_with(|| self.post.cmp(&other.post))
            .then_with(|| self.dev_key().cmp(&other.dev_key()))
            // No local version sorts before any local version; then part by
            // part, a shorter label first when it is a prefix.
            .then_with(|| match (self.local.is_empty(), other.local.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Less,
                (false, true) => Ordering::Greater,
                (false, false) => self.local.cmp(&other.local),
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

/// The normalised form, as `str(packaging.version.Version(...))` prints it.
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.epoch.is_zero() {
            write!(f, "{}!", self.epoch)?;
        }
        for (i, n) in self.release.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{n}")?;
        }
        if let Some((kind, n)) = &self.pre {
            write!(f, "{}{n}", kind.as_str())?;
        }
        if let Some(n) = &self.post {
            write!(f, ".post{n}")?;
        }
        if let Some(n) = &self.dev {
            write!(f, ".dev{n}")?;
        }
        for (i, part) in self.local.iter().enumerate() {
            f.write_str(if i == 0 { "+" } else { "." })?;
            match part {
                LocalPart::Str(s) => f.write_str(s)?,
                LocalPart::Num(n) => write!(f, "{n}")?,
            }
        }
        Ok(())
    }
}

/// A position in the lowercased version string.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn eat(&mut self, lit: &[u8]) -> bool {
        if self.s[self.i..].starts_with(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn eat_sep(&mut self) -> bool {
        match self.s.get(self.i) {
            Some(b'-' | b'_' | b'.') => {
                self.i += 1;
                true
            }
            _ => false,
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.i;
        while self.s.get(self.i).is_some_and(|&b| f(b)) {
            self.i += 1;
        }
        // Only ASCII was accepted, so this is always valid UTF-8.
        std::str::from_utf8(&self.s[start..self.i]).unwrap_or("")
    }

    fn digits(&mut self) -> Option<&'a str> {
        let d = self.take_while(|b| b.is_ascii_digit());
        (!d.is_empty()).then_some(d)
    }

    /// `[-_.]?LABEL[-_.]?N?` with the first label that matches (longer
    /// spellings are listed before their prefixes); nothing is consumed
    /// when no label matches. A missing number is 0.
    fn labelled<T: Copy>(&mut self, labels: &[(&str, T)]) -> Option<(T, Num)> {
        let save = self.i;
        self.eat_sep();
        let rest = &self.s[self.i..];
        let Some(&(label, value)) = labels
            .iter()
            .find(|(label, _)| rest.starts_with(label.as_bytes()))
        else {
            self.i = save;
            return None;
        };
        self.i += label.len();
        self.eat_sep();
        let n = self.digits().map_or(Num::Small(0), Num::from_digits);
        Some((value, n))
    }
}

/// A project name as PEP 503 normalises it: lowercase, every run of `-`,
/// `_` and `.` replaced by one `-`.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_sep = false;
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_sep {
                out.push('-');
            }
            in_sep = true;
        } else {
            out.extend(c.to_lowercase());
            in_sep = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `packaging`'s tests/test_version.py: VERSIONS, in ascending order.
    const ORDERED: &[&str] = &[
        // Implicit epoch of 0
        "1.0.dev456",
        "1.0a1",
        "1.0a2.dev456",
        "1.0a12.dev456",
        "1.0a12",
        "1.0b1.dev456",
        "1.0b2",
        "1.0b2.post345.dev456",
        "1.0b2.post345",
        "1.0b2-346",
        "1.0c1.dev456",
        "1.0c1",
        "1.0rc2",
        "1.0c3",
        "1.0",
        "1.0.post456.dev34",
        "1.0.post456",
        "1.1.dev1",
        "1.2+123abc",
        "1.2+123abc456",
        "1.2+abc",
        "1.2+abc123",
        "1.2+abc123def",
        "1.2+1234.abc",
        "1.2+123456",
        "1.2.r32+123456",
        "1.2.rev33+123456",
        // Explicit epoch of 1
        "1!1.0.dev456",
        "1!1.0a1",
        "1!1.0a2.dev456",
        "1!1.0a12.dev456",
        "1!1.0a12",
        "1!1.0b1.dev456",
        "1!1.0b2",
        "1!1.0b2.post345.dev456",
        "1!1.0b2.post345",
        "1!1.0b2-346",
        "1!1.0c1.dev456",
        "1!1.0c1",
        "1!1.0rc2",
        "1!1.0c3",
        "1!1.0",
        "1!1.0.post456.dev34",
        "1!1.0.post456",
        "1!1.1.dev1",
        "1!1.2+123abc",
        "1!1.2+123abc456",
        "1!1.2+abc",
        "1!1.2+abc123",
        "1!1.2+abc123def",
        "1!1.2+1234.abc",
        "1!1.2+123456",
        "1!1.2.r32+123456",
        "1!1.2.rev33+123456",
    ];

    #[test]
    fn orders_like_packaging() {
        let parsed: Vec<Version> = ORDERED.iter().map(|s| v(s)).collect();
        for (i, a) in parsed.iter().enumerate() {
            for (j, b) in parsed.iter().enumerate() {
                assert_eq!(a.cmp(b), i.cmp(&j), "{} vs {}", ORDERED[i], ORDERED[j]);
            }
        }
    }

    #[test]
    fn orders_more_cases() {
        use Ordering::{Equal, Greater, Less};
        let table = [
            ("1.0", "1.0.0", Equal),
            ("1.0", "1.0.0.0.0", Equal),
            ("1", "1.0", Equal),
            ("1.0a", "1.0a0", Equal),
            ("1.0.post", "1.0.post0", Equal),
            ("1.0-0", "1.0.post0", Equal),
            ("1.0.dev", "1.0.dev0", Equal),
            ("v1.0", "1.0", Equal),
            ("1.0+abc", "1.0+ABC", Equal),
            ("1.0+1", "1.0+01", Equal),
            ("0!1.0", "1.0", Equal),
            ("1.0", "1.0.1", Less),
            ("1.9", "1.10", Less),
            ("1.0", "1.0+local", Less),
            ("1.0+local", "1.0.post1", Less),
            ("1.0.post1", "1.0.post1+local", Less),
            ("1.0+a", "1.0+a.b", Less),
            ("1.0+a.1", "1.0+a.b", Greater),
            ("1.0.dev1", "1.0a1", Less),
            ("1.0a1.dev1", "1.0a1", Less),
            ("1.0a1", "1.0b1", Less),
            ("1.0b1", "1.0rc1", Less),
            ("1.0rc1", "1.0", Less),
            ("1.0.post1.dev1", "1.0.post1", Less),
            ("1.0.post1.dev1", "1.0", Greater),
            ("2.11.3", "2.11.2", Greater),
            ("0.4.0b1", "0.3.10", Greater),
            ("0.4.0b1", "0.4.0", Less),
            ("0.9.3.dev6", "0.9.2", Greater),
            ("0.9.3.dev6", "0.9.3", Less),
            ("1!0.1", "2.0", Greater),
            ("1.0", "99999999999999999999999.0", Less),
            (
                "99999999999999999999999.0",
                "99999999999999999999998.0",
                Greater,
            ),
            ("100000000000000000000.0", "9999999999999999999.0", Greater),
        ];
        for (a, b, expect) in table {
            assert_eq!(v(a).cmp(&v(b)), expect, "{a} vs {b}");
            assert_eq!(v(b).cmp(&v(a)), expect.reverse(), "{b} vs {a}");
            assert_eq!(v(a) == v(b), expect == Equal, "{a} == {b}");
        }
    }

    #[test]
    fn normalises_like_packaging() {
        // (input, str(Version(input))) from packaging's test_normalized_versions.
        let table = [
            // Various development release incarnations
            ("1.0dev", "1.0.dev0"),
            ("1.0.dev", "1.0.dev0"),
            ("1.0dev1", "1.0.dev1"),
            ("1.0-dev", "1.0.dev0"),
            ("1.0-dev1", "1.0.dev1"),
            ("1.0DEV", "1.0.dev0"),
            ("1.0.DEV", "1.0.dev0"),
            ("1.0DEV1", "1.0.dev1"),
            ("1.0.DEV1", "1.0.dev1"),
            ("1.0-DEV", "1.0.dev0"),
            ("1.0-DEV1", "1.0.dev1"),
            // Various alpha incarnations
            ("1.0a", "1.0a0"),
            ("1.0.a", "1.0a0"),
            ("1.0.a1", "1.0a1"),
            ("1.0-a", "1.0a0"),
            ("1.0-a1", "1.0a1"),
            ("1.0alpha", "1.0a0"),
            ("1.0.alpha", "1.0a0"),
            ("1.0.alpha1", "1.0a1"),
            ("1.0-alpha", "1.0a0"),
            ("1.0-alpha1", "1.0a1"),
            ("1.0A", "1.0a0"),
            ("1.0.A", "1.0a0"),
            ("1.0.A1", "1.0a1"),
            ("1.0-A", "1.0a0"),
            ("1.0-A1", "1.0a1"),
            ("1.0ALPHA", "1.0a0"),
            ("1.0.ALPHA", "1.0a0"),
            ("1.0.ALPHA1", "1.0a1"),
            ("1.0-ALPHA", "1.0a0"),
            ("1.0-ALPHA1", "1.0a1"),
            // Various beta incarnations
            ("1.0b", "1.0b0"),
            ("1.0.b", "1.0b0"),
            ("1.0.b1", "1.0b1"),
            ("1.0-b", "1.0b0"),
            ("1.0-b1", "1.0b1"),
            ("1.0beta", "1.0b0"),
            ("1.0.beta", "1.0b0"),
            ("1.0.beta1", "1.0b1"),
            ("1.0-beta", "1.0b0"),
            ("1.0-beta1", "1.0b1"),
            ("1.0B", "1.0b0"),
            ("1.0.B", "1.0b0"),
            ("1.0.B1", "1.0b1"),
            ("1.0-B", "1.0b0"),
            ("1.0-B1", "1.0b1"),
            ("1.0BETA", "1.0b0"),
            ("1.0.BETA", "1.0b0"),
            ("1.0.BETA1", "1.0b1"),
            ("1.0-BETA", "1.0b0"),
            ("1.0-BETA1", "1.0b1"),
            // Various release candidate incarnations
            ("1.0c", "1.0rc0"),
            ("1.0.c", "1.0rc0"),
            ("1.0.c1", "1.0rc1"),
            ("1.0-c", "1.0rc0"),
            ("1.0-c1", "1.0rc1"),
            ("1.0rc", "1.0rc0"),
            ("1.0.rc", "1.0rc0"),
            ("1.0.rc1", "1.0rc1"),
            ("1.0-rc", "1.0rc0"),
            ("1.0-rc1", "1.0rc1"),
            ("1.0C", "1.0rc0"),
            ("1.0.C", "1.0rc0"),
            ("1.0.C1", "1.0rc1"),
            ("1.0-C", "1.0rc0"),
            ("1.0-C1", "1.0rc1"),
            ("1.0RC", "1.0rc0"),
            ("1.0.RC", "1.0rc0"),
            ("1.0.RC1", "1.0rc1"),
            ("1.0-RC", "1.0rc0"),
            ("1.0-RC1", "1.0rc1"),
            ("1.0pre", "1.0rc0"),
            ("1.0preview1", "1.0rc1"),
            // Various post release incarnations
            ("1.0post", "1.0.post0"),
            ("1.0.post", "1.0.post0"),
            ("1.0post1", "1.0.post1"),
            ("1.0-post", "1.0.post0"),
            ("1.0-post1", "1.0.post1"),
            ("1.0POST", "1.0.post0"),
            ("1.0.POST", "1.0.post0"),
            ("1.0POST1", "1.0.post1"),
            ("1.0.POST1", "1.0.post1"),
            ("1.0r", "1.0.post0"),
            ("1.0rev", "1.0.post0"),
            ("1.0.r1", "1.0.post1"),
            ("1.0.rev1", "1.0.post1"),
            ("1.0-r1", "1.0.post1"),
            ("1.0-rev1", "1.0.post1"),
            ("1.0R", "1.0.post0"),
            ("1.0REV", "1.0.post0"),
            ("1.0.R1", "1.0.post1"),
            ("1.0.REV1", "1.0.post1"),
            ("1.0-R1", "1.0.post1"),
            ("1.0-REV1", "1.0.post1"),
            ("1.0-1", "1.0.post1"),
            // Local version case insensitivity
            ("1.0+AbC", "1.0+abc"),
            // Integer normalization
            ("1.01", "1.1"),
            ("1.0a05", "1.0a5"),
            ("1.0b07", "1.0b7"),
            ("1.0c056", "1.0rc56"),
            ("1.0rc09", "1.0rc9"),
            ("1.0.post000", "1.0.post0"),
            ("1.1.dev09000", "1.1.dev9000"),
            ("00!1.2", "1.2"),
            ("0100!0.0", "100!0.0"),
            // Various other normalizations
            ("v1.0", "1.0"),
            ("   v1.0\t\n", "1.0"),
            ("1.0+ubuntu-1", "1.0+ubuntu.1"),
            ("1.0+ubuntu_1", "1.0+ubuntu.1"),
            ("1.0+00123", "1.0+123"),
            ("1.0a1-1", "1.0a1.post1"),
            ("1.0a.-post1", "1.0a0.post1"),
            ("0.8.0-alpha2", "0.8.0a2"),
            ("1.4.7.dev3", "1.4.7.dev3"),
            ("1!2.0b3.post4.dev5+six.7", "1!2.0b3.post4.dev5+six.7"),
        ];
        for (input, expect) in table {
            assert_eq!(v(input).to_string(), expect, "{input:?}");
        }
    }

    #[test]
    fn rejects_legacy_versions() {
        // packaging's INVALID_VERSIONS, plus strings from real advisories.
        let table = [
            "french toast",
            "1.0+a+",
            "1.0++",
            "1.0+_foobar",
            "1.0+foo&asd",
            "1.0+1+1",
            "",
            "   ",
            "1.0-",
            "1.0.",
            "v",
            "1!",
            "1.0+",
            "1.0+a..b",
            "1.0dev1a1",
            "1.0.post1a1",
            "2019-09-12",
            "0.2.0-n653",
            "2.0.0-final",
            "-class.-jw.util.version.Version-",
            "1.0 beta",
            "１.0",
        ];
        for input in table {
            let err = Version::parse(input).expect_err(input);
            assert!(
                err.to_string().contains("is not a PEP 440 version"),
                "{err}"
            );
        }
    }

    #[test]
    fn flags() {
        assert!(v("1.0a1").is_prerelease());
        assert!(v("1.0.dev1").is_prerelease());
        assert!(v("1.0.dev1").is_devrelease());
        assert!(!v("1.0.post1").is_prerelease());
        assert!(v("1.0.post1").is_postrelease());
        assert!(!v("1.0").is_prerelease());
    }

    #[test]
    fn normalizes_names() {
        let table = [
            ("Jinja2", "jinja2"),
            ("jinja2", "jinja2"),
            ("typing_extensions", "typing-extensions"),
            ("zope.interface", "zope-interface"),
            ("Foo__Bar--Baz..Qux", "foo-bar-baz-qux"),
            ("foo-_.bar", "foo-bar"),
            ("PyYAML", "pyyaml"),
            ("jw.util", "jw-util"),
        ];
        for (input, expect) in table {
            assert_eq!(normalize_name(input), expect, "{input:?}");
        }
    }
}
