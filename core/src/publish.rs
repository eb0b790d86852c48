//! Which digest of an image is published, and which earlier ones users may
//! step back to: the choice the hub's catalog and `labforge rollback` make
//! from the state store's scan rows and rollback pins.
//!
//! Pure: the caller reads the rows. The rules:
//! - a digest is **eligible** when its newest scan row is a pass and is
//!   published (a rescan that rejects it withdraws it);
//! - eligible digests are ordered by when they were **first** published,
//!   newest first, so re-recording an old digest never makes it current
//!   again;
//! - a **pin** (`labforge rollback`) holds the image at its digest while that
//!   digest is eligible and no digest was first published after the pin was
//!   made (a fixed release supersedes the rollback).

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
        .filter(|(_, row)| row.published && row.verdict == "pass")
        .filter_map(|(digest, row)| {
            let first = first_published.get(digest)?;
            Some((
                first.id,
                Candidate {
                    digest: (*digest).to_string(),
                    repository: row.repository.clone(),
                    first_published_at: first.created_at,
                },
            ))
        })
        .collect();
    eligible.sort_by_key(|b| std::cmp::Reverse(b.0));
    let eligible: Vec<Candidate> = eligible.into_iter().map(|(_, c)| c).collect();
    let newest_at = eligible.first().map(|c| c.first_published_at);
    let held = pin.and_then(|pin| {
        let at = eligible.iter().position(|c| c.digest == pin.digest)?;
        let superseded = eligible
            .iter()
            .any(|c| c.first_published_at > pin.created_at);
        (!superseded).then_some((at, pin.clone()))
    });
    let (current, pin) = match held {
        Some((at, pin)) => (Some(at), Some(pin)),
        None => (newest_at.map(|_| 0), None),
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

    fn pin(digest: &str, at: i64) -> Pin {
        Pin {
            image: "nb".into(),
            digest: digest.into(),
            from_digest: None,
            actor: "t".into(),
            reason: String::new(),
            created_at: at,
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
        let p = select(&rows, Some(&pin("a", 2500)));
        assert_eq!(p.current().map(|c| c.digest.as_str()), Some("a"));
        assert!(p.pin.is_some());
        // The rolled-back digest is not offered as a version.
        assert_eq!(digests(&p), ["a"]);
        let rows = [
            row(1, "a", "pass", true),
            row(2, "b", "pass", true),
            row(3, "c", "pass", true),
        ];
        let p = select(&rows, Some(&pin("a", 2500)));
        assert_eq!(p.current().map(|c| c.digest.as_str()), Some("c"));
        assert!(p.pin.is_none());
    }

    #[test]
    fn a_pin_on_a_withdrawn_digest_does_not_hold() {
        let rows = [
            row(1, "a", "pass", true),
            row(2, "b", "pass", true),
            row(3, "a", "fail", false),
        ];
        let p = select(&rows, Some(&pin("a", 2500)));
        assert_eq!(p.current().map(|c| c.digest.as_str()), Some("b"));
    }
}
