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
//!
//! What users are **offered** can lag behind what is current ([`offer`]):
//! with `[kubernetes.prepull] offer_after`, a current digest that the
//! pre-pullers have not yet pulled onto enough of its nodes is held back,
//! and users keep an older one meanwhile.

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

/// What users are offered of one image while its current digest may still
/// be on its way to the nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The publication with `current` at the digest users are offered (its
    /// `versions` are what the profile list shows); `current` is `None`
    /// when nothing is offered yet.
    pub offered: Publication,
    /// The current digest, held back until it is ready.
    pub held: Option<Candidate>,
}

/// What users are offered of `publication`, given which digests are
/// `ready` (pulled onto enough of the nodes where they run).
///
/// - a ready current digest is offered, and so is one a rollback pin chose
///   (an operator's explicit decision holds at once);
/// - a current digest that is not ready is held back: users are offered
///   the newest older eligible digest that is ready, or, when none is
///   known to be, the next older one (what they had before it was
///   published);
/// - an image whose first digest is not ready is not offered at all.
pub fn offer(publication: &Publication, ready: impl Fn(&Candidate) -> bool) -> Offer {
    let Some(at) = publication.current else {
        return Offer {
            offered: publication.clone(),
            held: None,
        };
    };
    let Some(current) = publication.eligible.get(at) else {
        return Offer {
            offered: publication.clone(),
            held: None,
        };
    };
    if publication.pin.is_some() || ready(current) {
        return Offer {
            offered: publication.clone(),
            held: None,
        };
    }
    let older = at + 1..publication.eligible.len();
    let instead = older
        .clone()
        .find(|&i| ready(&publication.eligible[i]))
        .or_else(|| older.clone().next());
    Offer {
        offered: Publication {
            eligible: publication.eligible.clone(),
            current: instead,
            pin: None,
        },
        held: Some(current.clone()),
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

    fn offered(o: &Offer) -> Vec<&str> {
        digests(&o.offered)
    }

    fn held(o: &Offer) -> Option<&str> {
        o.held.as_ref().map(|c| c.digest.as_str())
    }

    #[test]
    fn a_ready_current_digest_is_offered() {
        let rows = [row(1, "a", "pass", true), row(2, "b", "pass", true)];
        let p = select(&rows, None);
        let o = offer(&p, |_| true);
        assert_eq!(o.offered, p);
        assert_eq!(held(&o), None);
    }

    #[test]
    fn a_current_digest_not_yet_pulled_is_held_back_for_the_previous_one() {
        let rows = [
            row(1, "a", "pass", true),
            row(2, "b", "pass", true),
            row(3, "c", "pass", true),
        ];
        let p = select(&rows, None);
        // Only c is still being pulled; b and a are on the nodes.
        let o = offer(&p, |c| c.digest != "c");
        assert_eq!(offered(&o), ["b", "a"]);
        assert_eq!(held(&o), Some("c"));
        assert_eq!(o.offered.current().map(|c| c.digest.as_str()), Some("b"));
        // The held digest is not offered as a version either.
        assert!(!o.offered.versions(5).iter().any(|c| c.digest == "c"));
    }

    #[test]
    fn the_fallback_skips_an_older_digest_still_being_pulled() {
        // b was still being pulled when c was published: users keep a.
        let rows = [
            row(1, "a", "pass", true),
            row(2, "b", "pass", true),
            row(3, "c", "pass", true),
        ];
        let p = select(&rows, None);
        let o = offer(&p, |c| c.digest == "a");
        assert_eq!(offered(&o), ["a"]);
        assert_eq!(held(&o), Some("c"));
    }

    #[test]
    fn without_a_ready_older_digest_the_next_older_one_is_offered() {
        // Nothing is known to be on the nodes (a hub that has not looked
        // yet): users keep what they had before the new digest, not nothing.
        let rows = [
            row(1, "a", "pass", true),
            row(2, "b", "pass", true),
            row(3, "c", "pass", true),
        ];
        let o = offer(&select(&rows, None), |_| false);
        assert_eq!(offered(&o), ["b", "a"]);
        assert_eq!(held(&o), Some("c"));
    }

    #[test]
    fn a_brand_new_image_is_not_offered_until_ready() {
        let rows = [row(1, "a", "pass", true)];
        let p = select(&rows, None);
        let o = offer(&p, |_| false);
        assert!(o.offered.current().is_none());
        assert!(o.offered.versions(2).is_empty());
        assert_eq!(held(&o), Some("a"));
        let o = offer(&p, |_| true);
        assert_eq!(offered(&o), ["a"]);
        assert_eq!(held(&o), None);
    }

    #[test]
    fn a_pinned_digest_is_offered_at_once() {
        // The operator rolled back to a, which left the nodes meanwhile:
        // the pin is honoured without waiting for the pre-pullers.
        let rows = [row(1, "a", "pass", true), row(2, "b", "pass", true)];
        let p = select(&rows, Some(&pin("a", 2)));
        let o = offer(&p, |_| false);
        assert_eq!(o.offered, p);
        assert_eq!(held(&o), None);
    }

    #[test]
    fn nothing_eligible_offers_nothing_and_holds_nothing() {
        let rows = [row(1, "a", "fail", false)];
        let o = offer(&select(&rows, None), |_| false);
        assert!(o.offered.current().is_none());
        assert_eq!(held(&o), None);
    }

    #[test]
    fn a_withdrawn_new_digest_gives_back_the_previous_one() {
        // c was held back while pulled, then a rescan rejected it: b is
        // current again, and it is on the nodes.
        let rows = [
            row(1, "a", "pass", true),
            row(2, "b", "pass", true),
            row(3, "c", "pass", true),
            row(4, "c", "fail", false),
        ];
        let o = offer(&select(&rows, None), |c| c.digest != "c");
        assert_eq!(offered(&o), ["b", "a"]);
        assert_eq!(held(&o), None);
    }
}
