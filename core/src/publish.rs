//! Which digest of an image is published, and which earlier ones users may
//! step back to: the choice the hub's catalog and `labforge rollback` make
//! from the state store's scan rows and rollback pins.
//!
//! Pure: the caller reads the rows. The rules:
//! - a digest is **eligible** when its newest scan row is a pass and some
//!   scan row published it
//!   (a rescan that rejects it withdraws it); a later pass that could not
//!   move the tags (`published` false) does not withdraw a digest that was
//!   published before;
//! - eligible digests are ordered by when they were **first** published
//!   (scan row order), newest first, so re-recording an old digest never
//!   makes it current again;
//! - a **pin** (`labforge rollback`) holds the image at its digest while that
//!   digest is eligible and no digest was first published by a scan row
//!   newer than the pin (a fixed release supersedes the rollback). Row ids,
//!   not clocks: the builder and the operator may be on different machines.

use serde::{Deserialize, Serialize};

/// One row of the state store's `scans` table, without the documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRow {
    /// Row id: higher is newer.
    pub id: i64,
    pub image: String,
    /// `host/path/repo` the digest lives in.
    pub repository: String,
    pub digest: String,
    /// `pass` or `fail`.
    pub verdict: String,
    pub published: bool,
    /// Unix ms.
    pub created_at: i64,
}

/// A rollback: hold `image` at `digest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub image: String,
    pub digest: String,
    /// The digest that was current when the pin was made.
    pub from_digest: Option<String>,
    /// The newest `scans` row id when the pin was recorded (set by the state
    /// store): digests first published by later rows supersede the pin.
    pub after_scan: i64,
    /// Who asked for it (user name, or `cli:<login>`).
    pub actor: String,
    pub reason: String,
    /// Unix ms.
    pub created_at: i64,
}

/// One eligible digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub digest: String,
    pub repository: String,
    /// Unix ms of its first published scan row.
    pub first_published_at: i64,
    /// Row id of its first published scan row.
    pub first_published_row: i64,
}

/// What is published for one image.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Publication {
    /// Every eligible digest, newest first publication first (the current one
    /// is not necessarily `eligible[0]` when a pin holds).
    pub eligible: Vec<Candidate>,
    /// Index into `eligible` of the current digest; `None` when nothing is
    /// eligible.
    pub current: Option<usize>,
    /// The pin that decided `current`, when one holds.
    pub pin: Option<Pin>,
}

impl Publication {
    pub fn current(&self) -> Option<&Candidate> {
        self.current.and_then(|i| self.eligible.get(i))
    }

    /// The current digest followed by up to `previous` older eligible ones
    /// (older than the current: a rolled-back release is not offered).
    pub fn versions(&self, previous: usize) -> Vec<&Candidate> {
        match self.current {
            Some(i) => self.eligible.iter().skip(i).take(previous + 1).collect(),
            None => Vec::new(),
        }
    }

    /// The digest a rollback from the current one goes to: the next older
    /// eligible digest.
    pub fn previous(&self) -> Option<&Candidate> {
        self.current.and_then(|i| self.eligible.get(i + 1))
    }
}

/// Decide what is published for one image from its scan rows (any order)
/// and its newest pin.
pub fn select(rows: &[ScanRow], pin: Option<&Pin>) -> Publication {
    let mut rows: Vec<&ScanRow> = rows.iter().collect();
    rows.sort_by_key(|r| r.id);
    // digest → (newest row, first published row)
    let mut newest: indexmap::IndexMap<&str, &ScanRow> = indexmap::IndexMap::new();
    let mut first_published: std::collections::HashMap<&str, &ScanRow> =
        std::collections::HashMap::new();
    for row in &rows {
        newest.insert(row.digest.as_str(), row);
        if row.published {
            first_published.entry(row.digest.as_str()).or_insert(row);
        }
    }
    let mut eligible: Vec<(i64, Candidate)> = newest
        .iter()
        .filter(|(_, row)| row.verdict == "pass")
        .filter_map(|(digest, row)| {
            let first = first_published.get(digest)?;
            Some((
                first.id,
                Candidate {
                    digest: (*digest).to_string(),
                    repository: row.repository.clone(),
                    first_published_at: first.created_at,
                    first_published_row: first.id,
                },
            ))
        })
        .collect();
    eligible.sort_by_key(|b| std::cmp::Reverse(b.0));
    let eligible: Vec<Candidate> = eligible.into_iter().map(|(_, c)| c).collect();
    let held = pin.and_then(|pin| {
        let at = eligible.iter().position(|c| c.digest == pin.digest)?;
        let superseded = eligible
            .iter()
            .any(|c| c.first_published_row > pin.after_scan);
        (!superseded).then_some((at, pin.clone()))
    });
    let (current, pin) = match held {
        Some((at, pin)) => (Some(at), Some(pin)),
        None => ((!eligible.is_empty()).then_some(0), None),
    };
    Publication {
        eligible,
        current,
        pin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, digest: &str, verdict: &str, published: bool) -> ScanRow {
        ScanRow {
            id,
            image: "nb".into(),
            repository: "r/nb".into(),
            digest: digest.into(),
            verdict: verdict.into(),
            published,
            created_at: id * 1000,
        }
    }

    /// A pin recorded when `after_scan` was the newest scan row. Its clock
    /// is deliberately far off: only row order counts.
    fn pin(digest: &str, after_scan: i64) -> Pin {
        Pin {
            image: "nb".into(),
            digest: digest.into(),
            from_digest: None,
            after_scan,
            actor: "t".into(),
            reason: String::new(),
            created_at: 0,
        }
    }

    fn digests(p: &Publication) -> Vec<&str> {
        p.versions(5).iter().map(|c| c.digest.as_str()).collect()
    }

    #[test]
    fn newest_first_publication_is_current() {
        let rows = [
            row(1, "a", "pass", true),
            row(2, "b", "pass", true),
            row(3, "a", "pass", true), // re-recorded: stays older than b
        ];
        let p = select(&rows, None);
        assert_eq!(digests(&p), ["b", "a"]);
        assert_eq!(p.previous().map(|c| c.digest.as_str()), Some("a"));
    }

    #[test]
    fn a_rejecting_rescan_withdraws_a_digest() {
        let rows = [
            row(1, "a", "pass", true),
            row(2, "b", "pass", true),
            row(3, "b", "fail", false),
            row(4, "c", "fail", false),
        ];
        assert_eq!(digests(&select(&rows, None)), ["a"]);
    }

    #[test]
    fn never_published_is_not_eligible() {
        let rows = [row(1, "a", "pass", false)];
        let p = select(&rows, None);
        assert!(p.current().is_none());
        assert!(p.versions(2).is_empty());
    }

    #[test]
    fn a_pin_holds_until_a_newer_digest_is_published() {
        let rows = [row(1, "a", "pass", true), row(2, "b", "pass", true)];
        let p = select(&rows, Some(&pin("a", 2)));
        assert_eq!(p.current().map(|c| c.digest.as_str()), Some("a"));
        assert!(p.pin.is_some());
        // The rolled-back digest is not offered as a version.
        assert_eq!(digests(&p), ["a"]);
        let rows = [
            row(1, "a", "pass", true),
            row(2, "b", "pass", true),
            row(3, "c", "pass", true),
        ];
        let p = select(&rows, Some(&pin("a", 2)));
        assert_eq!(p.current().map(|c| c.digest.as_str()), Some("c"));
        assert!(p.pin.is_none());
        // A pin made after c was published (row 3) holds, even though its
        // clock says it is older than everything.
        let p = select(&rows, Some(&pin("a", 3)));
        assert_eq!(p.current().map(|c| c.digest.as_str()), Some("a"));
    }

    #[test]
    fn a_pin_on_a_withdrawn_digest_does_not_hold() {
        let rows = [
            row(1, "a", "pass", true),
            row(2, "b", "pass", true),
            row(3, "a", "fail", false),
        ];
        let p = select(&rows, Some(&pin("a", 3)));
        assert_eq!(p.current().map(|c| c.digest.as_str()), Some("b"));
    }

    #[test]
    fn a_pass_that_could_not_move_the_tags_does_not_withdraw() {
        // A rescan passed but its tag move failed: recorded as a pass that
        // is not published. The digest stays what users get.
        let rows = [
            row(1, "a", "pass", true),
            row(2, "b", "pass", true),
            row(3, "b", "pass", false),
        ];
        assert_eq!(digests(&select(&rows, None)), ["b", "a"]);
    }
}
