//! Debian version numbers: parsing and ordering exactly as dpkg does it
//! (Debian policy 5.6.12, dpkg's `parseversion` and `verrevcmp`).
//!
//! A version is `[epoch:]upstream[-revision]`. Epochs compare as numbers;
//! upstream and revision compare part by part: a run of non-digits by
//! character (`~` before everything, even the end; letters before every
//! other character), then a run of digits as a number, and so on.
//!
//! Pure: no I/O. Used by the OSV matcher for `Debian:*` and `Ubuntu:*`
//! advisories and by the package diff.

use std::cmp::Ordering;
use std::fmt;

use thiserror::Error;

/// Why a string is not a Debian version (dpkg's own messages).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VersionError {
    #[error("version string is empty")]
    Empty,
    #[error("version '{version}' has embedded spaces")]
    EmbeddedSpaces { version: String },
    #[error("epoch in version '{version}' is empty")]
    EmptyEpoch { version: String },
    #[error("epoch in version '{version}' is not a number")]
    BadEpoch { version: String },
    #[error("epoch in version '{version}' is too big")]
    EpochTooBig { version: String },
    #[error("nothing after colon in version '{version}'")]
    NothingAfterColon { version: String },
    #[error("revision in version '{version}' is empty")]
    EmptyRevision { version: String },
    #[error("upstream version in '{version}' is empty")]
    EmptyUpstream { version: String },
    #[error("version '{version}' does not start with a digit")]
    NoLeadingDigit { version: String },
    #[error("invalid character '{ch}' in upstream version of '{version}'")]
    BadUpstreamChar { version: String, ch: char },
    #[error("invalid character '{ch}' in revision of '{version}'")]
    BadRevisionChar { version: String, ch: char },
}

/// A parsed Debian version. Equality is dpkg's: `1.0`, `0:1.0`, `1.0-0`
/// and `1.00` are all equal.
#[derive(Debug, Clone)]
pub struct DebVersion {
    epoch: u32,
    upstream: String,
    revision: String,
}

impl DebVersion {
    /// Parses `[epoch:]upstream[-revision]`, rejecting what dpkg rejects or
    /// warns about (an upstream version that does not start with a digit,
    /// characters outside `[A-Za-z0-9.+~-:]`). Leading and trailing blanks
    /// are ignored, as dpkg does.
    pub fn parse(s: &str) -> Result<DebVersion, VersionError> {
        let trimmed = s.trim_matches(|c| c == ' ' || c == '\t');
        if trimmed.is_empty() {
            return Err(VersionError::Empty);
        }
        let version = || trimmed.to_string();
        if trimmed.contains([' ', '\t']) {
            return Err(VersionError::EmbeddedSpaces { version: version() });
        }
        let (epoch, rest) = match trimmed.split_once(':') {
            Some((epoch, rest)) => {
                if epoch.is_empty() {
                    return Err(VersionError::EmptyEpoch { version: version() });
                }
                if !epoch.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(VersionError::BadEpoch { version: version() });
                }
                let epoch: u32 = match epoch.parse() {
                    Ok(n) if n <= i32::MAX as u32 => n,
                    _ => return Err(VersionError::EpochTooBig { version: version() }),
                };
                if rest.is_empty() {
                    return Err(VersionError::NothingAfterColon { version: version() });
                }
                (epoch, rest)
            }
            None => (0, trimmed),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((_, "")) => return Err(VersionError::EmptyRevision { version: version() }),
            Some((upstream, revision)) => (upstream, revision),
            None => (rest, ""),
        };
        let Some(first) = upstream.chars().next() else {
            return Err(VersionError::EmptyUpstream { version: version() });
        };
        if !first.is_ascii_digit() {
            return Err(VersionError::NoLeadingDigit { version: version() });
        }
        if let Some(ch) = upstream
            .chars()
            .find(|&c| !c.is_ascii_alphanumeric() && !".-+~:".contains(c))
        {
            return Err(VersionError::BadUpstreamChar {
                version: version(),
                ch,
            });
        }
        if let Some(ch) = revision
            .chars()
            .find(|&c| !c.is_ascii_alphanumeric() && !".+~".contains(c))
        {
            return Err(VersionError::BadRevisionChar {
                version: version(),
                ch,
            });
        }
        Ok(DebVersion {
            epoch,
            upstream: upstream.to_string(),
            revision: revision.to_string(),
        })
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The Debian revision, empty when the version has none.
    pub fn revision(&self) -> &str {
        &self.revision
    }
}

impl fmt::Display for DebVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch != 0 {
            write!(f, "{}:", self.epoch)?;
        }
        f.write_str(&self.upstream)?;
        if !self.revision.is_empty() {
            write!(f, "-{}", self.revision)?;
        }
        Ok(())
    }
}

impl Ord for DebVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(&self.upstream, &other.upstream))
            .then_with(|| verrevcmp(&self.revision, &other.revision))
    }
}

impl PartialOrd for DebVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for DebVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for DebVersion {}

/// Compares two version strings the way `dpkg --compare-versions` does.
///
/// Total: strings that [`DebVersion::parse`] rejects are still compared
/// (dpkg only warns about most of them), split at the first `:` and the last
/// `-` with a non-numeric epoch counted as 0.
pub fn compare(a: &str, b: &str) -> Ordering {
    match (DebVersion::parse(a), DebVersion::parse(b)) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        _ => {
            let (ea, ua, ra) = split_lenient(a);
            let (eb, ub, rb) = split_lenient(b);
            ea.cmp(&eb)
                .then_with(|| verrevcmp(ua, ub))
                .then_with(|| verrevcmp(ra, rb))
        }
    }
}

fn split_lenient(s: &str) -> (u64, &str, &str) {
    let s = s.trim();
    let (epoch, rest) = match s.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
            (e.parse().unwrap_or(u64::MAX), rest)
        }
        _ => (0, s),
    };
    match rest.rsplit_once('-') {
        Some((u, r)) => (epoch, u, r),
        None => (epoch, rest, ""),
    }
}

/// dpkg's character weight: `~` first, then the end of the part (and
/// digits, which end a non-digit run), then letters, then everything else.
fn order(c: u8) -> i32 {
    if c.is_ascii_digit() {
        0
    } else if c.is_ascii_alphabetic() {
        i32::from(c)
    } else if c == b'~' {
        -1
    } else if c != 0 {
        i32::from(c) + 256
    } else {
        0
    }
}

/// dpkg's `verrevcmp`, on one part (upstream or revision).
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let at = |i: usize| a.get(i).copied().unwrap_or(0);
    let bt = |i: usize| b.get(i).copied().unwrap_or(0);
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !at(i).is_ascii_digit()) || (j < b.len() && !bt(j).is_ascii_digit()) {
            let (ac, bc) = (order(at(i)), order(bt(j)));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while at(i) == b'0' {
            i += 1;
        }
        while bt(j) == b'0' {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while at(i).is_ascii_digit() && bt(j).is_ascii_digit() {
            if first_diff == Ordering::Equal {
                first_diff = at(i).cmp(&bt(j));
            }
            i += 1;
            j += 1;
        }
        if at(i).is_ascii_digit() {
            return Ordering::Greater;
        }
        if bt(j).is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    /// `a` compared with `b` is `expect`, and `b` with `a` the reverse.
    fn check(a: &str, b: &str, expect: Ordering) {
        assert_eq!(compare(a, b), expect, "{a} vs {b}");
        assert_eq!(compare(b, a), expect.reverse(), "{b} vs {a}");
        let (pa, pb) = (DebVersion::parse(a), DebVersion::parse(b));
        if let (Ok(pa), Ok(pb)) = (pa, pb) {
            assert_eq!(pa.cmp(&pb), expect, "parsed {a} vs {b}");
            assert_eq!(pa == pb, expect == Equal, "parsed {a} == {b}");
        }
    }

    #[test]
    fn orders_like_dpkg() {
        // dpkg's lib/dpkg/t/t-version.c and the examples of policy 5.6.12,
        // each also checked with `dpkg --compare-versions`.
        let table = [
            // equality
            ("0", "0", Equal),
            ("0-00", "00-0", Equal),
            ("1:2-3", "1:2-3", Equal),
            ("1.0", "1.0-0", Equal),
            ("1.0", "0:1.0", Equal),
            ("1.00", "1.0", Equal),
            ("1.0-1", "1.0-01", Equal),
            // epoch
            ("0-0", "1:0-0", Less),
            ("1:0.1", "2.0", Greater),
            ("1:1.0", "1.0", Greater),
            ("2:0.1", "1:9.9", Greater),
            // upstream
            ("a", "b", Less),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0~~", "1.0~~a", Less),
            ("1.0~~a", "1.0~", Less),
            ("1.0~", "1.0", Less),
            ("1.0", "1.0a", Less),
            ("1.0a", "1.0+", Less),
            ("1.0+dfsg", "1.0", Greater),
            ("1.0+dfsg-1", "1.0-1", Greater),
            ("1.2.3", "1.2.10", Less),
            ("1.10", "1.9", Greater),
            ("1.0", "1.0.0", Less),
            ("7.6p2-4", "7.6-0", Greater),
            ("1.0.1", "1.0a", Greater),
            ("2.30", "2.3a", Greater),
            ("1.18.36", "1.18.36.0.1", Less),
            ("6.4+20230625-2", "6.4-2", Greater),
            // revision
            ("0-a", "0-b", Less),
            ("1.0-1", "1.0-1+b1", Less),
            ("1.0-1", "1.0-2", Less),
            ("1.0-9", "1.0-10", Less),
            ("1.0-1~bpo12+1", "1.0-1", Less),
            ("2.36-9+deb12u4", "2.36-9+deb12u3", Greater),
            ("2.36-9+deb12u10", "2.36-9+deb12u9", Greater),
            ("2.36-9+deb12u4", "2.36-9", Greater),
            ("2.36-9+deb12u4", "2.36-10", Less),
            ("3.0.11-1~deb12u2", "3.0.11-1", Less),
            ("5.2.15-2+b7", "5.2.15-2+b2", Greater),
            ("1.2.13.dfsg-1", "1:1.2.13.dfsg-1", Less),
            ("0.9.8-1ubuntu1", "0.9.8-1", Greater),
            ("2.35-0ubuntu3.6", "2.35-0ubuntu3.10", Less),
            // several hyphens: the revision is after the last one
            ("0:0-0-0", "0:0-0-1", Less),
            ("1.0-beta-1", "1.0-1", Greater),
        ];
        for (a, b, expect) in table {
            check(a, b, expect);
        }
    }

    #[test]
    fn parses_epoch_upstream_revision() {
        // (input, epoch, upstream, revision): dpkg's parseversion tests.
        let table = [
            ("0", 0, "0", ""),
            ("0:0", 0, "0", ""),
            ("0:0-0", 0, "0", "0"),
            ("0:0.0-0.0", 0, "0.0", "0.0"),
            ("1:0", 1, "0", ""),
            ("5:1", 5, "1", ""),
            ("0:0-0-0", 0, "0-0", "0"),
            ("0:0-0-0-0", 0, "0-0-0", "0"),
            ("0:0:0-0", 0, "0:0", "0"),
            ("0:0:0:0-0", 0, "0:0:0", "0"),
            ("0:0:0-0-0", 0, "0:0-0", "0"),
            ("0:0-0:0-0", 0, "0-0:0", "0"),
            ("0:09azAZ.-+~:-0", 0, "09azAZ.-+~:", "0"),
            ("0:0-azAZ09.+~", 0, "0", "azAZ09.+~"),
            ("  \t0:0-1", 0, "0", "1"),
            ("0:0-1\t  ", 0, "0", "1"),
            ("\t  0:0-1  \t", 0, "0", "1"),
            ("2.36-9+deb12u4", 0, "2.36", "9+deb12u4"),
            ("1:2.38.1-5+deb12u3", 1, "2.38.1", "5+deb12u3"),
        ];
        for (input, epoch, upstream, revision) in table {
            let v = DebVersion::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(
                (v.epoch(), v.upstream(), v.revision()),
                (epoch, upstream, revision),
                "{input:?}"
            );
        }
    }

    #[test]
    fn rejects_what_dpkg_rejects() {
        let table = [
            ("", "version string is empty"),
            ("  ", "version string is empty"),
            ("0:", "nothing after colon in version '0:'"),
            (":1.0", "epoch in version ':1.0' is empty"),
            ("1.0-", "revision in version '1.0-' is empty"),
            ("0:0 0-1", "version '0:0 0-1' has embedded spaces"),
            ("-1:0-1", "epoch in version '-1:0-1' is not a number"),
            (
                "999999999999999999999999:0-1",
                "epoch in version '999999999999999999999999:0-1' is too big",
            ),
            ("a:0-0", "epoch in version 'a:0-0' is not a number"),
            ("A:0-0", "epoch in version 'A:0-0' is not a number"),
            ("0:abc3-0", "version '0:abc3-0' does not start with a digit"),
            (
                "0:0_1-1",
                "invalid character '_' in upstream version of '0:0_1-1'",
            ),
            (
                "0:0!-1",
                "invalid character '!' in upstream version of '0:0!-1'",
            ),
            ("0:0-0:0", "invalid character ':' in revision of '0:0-0:0'"),
            ("0:0-a_b", "invalid character '_' in revision of '0:0-a_b'"),
        ];
        for (input, message) in table {
            let err = DebVersion::parse(input).expect_err(input);
            assert_eq!(err.to_string(), message, "{input:?}");
        }
        for bad in "!#@$%&/|\\<>()[]{};,_=*^'".chars() {
            let input = format!("0:0{bad}-1");
            assert!(
                DebVersion::parse(&input).is_err(),
                "{input:?} must be rejected"
            );
            let input = format!("0:0-1{bad}");
            assert!(
                DebVersion::parse(&input).is_err(),
                "{input:?} must be rejected"
            );
        }
    }

    #[test]
    fn compare_is_total_on_bad_versions() {
        // dpkg warns about these but still orders them.
        check("abc", "abd", Less);
        check("x:1.0", "1.0", Greater);
        check("1.0_1", "1.0", Greater);
        check("", "0", Equal);
    }

    #[test]
    fn sorts_and_displays() {
        let mut v: Vec<DebVersion> = ["1:0.1", "2.0", "1.0~rc1", "1.0", "1.0-1+b1", "1.0-1"]
            .into_iter()
            .map(|s| DebVersion::parse(s).expect("test input"))
            .collect();
        v.sort();
        let shown: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["1.0~rc1", "1.0", "1.0-1", "1.0-1+b1", "2.0", "1:0.1"]
        );
        assert_eq!(
            DebVersion::parse("0:1.0-2")
                .expect("test input")
                .to_string(),
            "1.0-2"
        );
    }
}
