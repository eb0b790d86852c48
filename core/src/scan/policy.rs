//! The scan policy and its verdict: which findings block publishing.
//!
//! The policy comes from the catalog (`scan:` in `catalog.yaml` for every
//! image, `scan:` in an image file to override it). It is applied to the
//! findings of every scanner that ran; the result is the scan [`Report`]
//! that is stored, attached to the image in the registry and shown to
//! maintainers. A scanner that did not finish fails the image: there is no
//! verdict without a complete scan. Pure: today's date is an argument.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::pep440::normalize_name;
use super::{Finding, Severity};

/// A calendar date (`YYYY-MM-DD`), for waiver expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

impl Date {
    /// Parse `YYYY-MM-DD`, checking the day exists.
    pub fn parse(s: &str) -> Result<Date, String> {
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| -> Option<u32> {
            b.get(r.clone())
                .filter(|d| d.iter().all(u8::is_ascii_digit))
                .and_then(|_| s.get(r)?.parse().ok())
        };
        let bad = || format!("{s:?} is not a date in the form YYYY-MM-DD");
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(bad());
        }
        let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10))
        else {
            return Err(bad());
        };
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return Err(format!("{s:?} has no month {month}")),
        };
        if day == 0 || day > days || year < 1970 {
            return Err(format!("{s:?} is not a day of the calendar"));
        }
        Ok(Date {
            year: year as u16,
            month: month as u8,
            day: day as u8,
        })
    }

    /// The UTC date of a Unix time in seconds.
    pub fn from_unix(secs: i64) -> Date {
        // Howard Hinnant's days-to-civil.
        let z = secs.div_euclid(86_400) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as u16;
        Date { year, month, day }
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let s = String::deserialize(d)?;
        Date::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An accepted risk: a finding that does not block publishing until `expires`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiver {
    /// The advisory id or any of its aliases (`CVE-…`, `GHSA-…`, `PYSEC-…`).
    pub id: String,
    /// Only for these packages (names as installed); empty: any package.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    pub reason: String,
    /// The last day the waiver holds; from the next day on it counts as no waiver.
    pub expires: Date,
    /// Who accepted the risk (a GitHub login or a name).
    pub approved_by: String,
}

impl Waiver {
    fn covers(&self, f: &Finding) -> bool {
        let id_matches = self.id.eq_ignore_ascii_case(&f.id)
            || f.aliases.iter().any(|a| a.eq_ignore_ascii_case(&self.id));
        let package = normalize_name(&f.package);
        id_matches
            && (self.packages.is_empty()
                || self.packages.iter().any(|p| normalize_name(p) == package))
    }
}

/// Whether two findings name the same advisory (by id or an alias).
fn same_advisory(a: &Finding, b: &Finding) -> bool {
    let ids = |f: &Finding| {
        std::iter::once(f.id.to_ascii_uppercase())
            .chain(f.aliases.iter().map(|x| x.to_ascii_uppercase()))
            .collect::<Vec<_>>()
    };
    let (a, b) = (ids(a), ids(b));
    a.iter().any(|x| b.contains(x))
}

/// The policy one image is judged by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Findings at or above this severity block publishing.
    pub severity: Severity,
    /// Only findings that have a fixed version block (an unfixable finding
    /// is reported, not blocking).
    pub fixed_only: bool,
    /// What a finding of unknown severity counts as.
    pub unknown_severity: Severity,
    #[serde(default)]
    pub waivers: Vec<Waiver>,
}

impl Default for Policy {
    /// Block high and critical findings that have a fix; a finding without
    /// a severity counts as high (we do not know it is harmless).
    fn default() -> Policy {
        Policy {
            severity: Severity::High,
            fixed_only: true,
            unknown_severity: Severity::High,
            waivers: Vec::new(),
        }
    }
}

/// An image's `scan:` block: what it changes in the catalog-wide policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PolicyOverride {
    pub severity: Option<Severity>,
    pub fixed_only: Option<bool>,
    pub unknown_severity: Option<Severity>,
    /// Added to the catalog-wide waivers.
    pub waivers: Vec<Waiver>,
}

impl Policy {
    /// This policy with an image's overrides applied.
    pub fn with(&self, o: &PolicyOverride) -> Policy {
        let mut waivers = self.waivers.clone();
        waivers.extend(o.waivers.iter().cloned());
        Policy {
            severity: o.severity.unwrap_or(self.severity),
            fixed_only: o.fixed_only.unwrap_or(self.fixed_only),
            unknown_severity: o.unknown_severity.unwrap_or(self.unknown_severity),
            waivers,
        }
    }

    /// The severity a finding counts with.
    pub fn effective(&self, s: Severity) -> Severity {
        if s == Severity::Unknown {
            self.unknown_severity
        } else {
            s
        }
    }
}

/// What the policy decided about one finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Blocks publishing.
    Blocking,
    /// Below the policy's severity.
    BelowThreshold,
    /// No fixed version exists and the policy counts fixable findings only.
    NoFix,
    /// Covered by a waiver that holds today.
    Waived {
        reason: String,
        approved_by: String,
        expires: Date,
    },
}

/// A finding with the scanner that found it and the policy's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Judged {
    #[serde(flatten)]
    pub finding: Finding,
    /// The scanners that reported it (`osv`, `trivy`).
    pub scanners: Vec<String>,
    /// `finding.severity` after `unknown_severity`.
    pub effective_severity: Severity,
    #[serde(flatten)]
    pub decision: Decision,
    /// Waivers for it that have expired (so they no longer count).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expired_waivers: Vec<Waiver>,
}

/// How one scanner's run went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScannerRun {
    /// `osv` or `trivy`.
    pub name: String,
    /// Its version and database (`trivy 0.76.0`, `osv: 2661 records`).
    pub detail: String,
    /// `None`: it finished; otherwise why it did not (crash, timeout, error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub findings: usize,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
}

/// Counts per effective severity, and per decision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub critical: usize,
    pub high: usize,
    pub medium: usize,
    pub low: usize,
    pub unknown: usize,
    pub blocking: usize,
    pub waived: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} critical, {} high, {} medium, {} low, {} unknown; {} blocking, {} waived",
            self.critical,
            self.high,
            self.medium,
            self.low,
            self.unknown,
            self.blocking,
            self.waived
        )
    }
}

/// The scan report of one image digest: stored with the build record and
/// attached to the image in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Always 1 for this layout.
    pub schema: u32,
    /// The concrete catalog image.
    pub image: String,
    /// `host/path` of the repository.
    pub repository: String,
    /// The manifest digest that was scanned.
    pub digest: String,
    /// RFC 3339.
    pub created: String,
    pub verdict: Verdict,
    /// Why the verdict is `fail`, one line each (blocking findings, scanners
    /// that did not finish).
    pub reasons: Vec<String>,
    pub summary: Summary,
    pub packages: usize,
    pub scanners: Vec<ScannerRun>,
    pub policy: Policy,
    pub findings: Vec<Judged>,
}

/// Everything the policy is applied to.
pub struct Input<'a> {
    pub image: &'a str,
    pub repository: &'a str,
    pub digest: &'a str,
    pub created: &'a str,
    pub packages: usize,
    /// Each scanner's run and, when it finished, its findings.
    pub runs: Vec<(ScannerRun, Vec<Finding>)>,
}

/// Apply `policy` to the findings of every scanner, on `today`.
pub fn evaluate(policy: &Policy, input: Input<'_>, today: Date) -> Report {
    let mut reasons = Vec::new();
    let mut scanners = Vec::with_capacity(input.runs.len());
    // One entry per advisory, package and installed version: the same
    // advisory seen by two scanners is one finding, also when one calls it
    // by an alias of the other's id (Trivy's CVE-X, OSV's PYSEC-Y with
    // alias CVE-X).
    let mut merged: Vec<(Finding, Vec<String>)> = Vec::new();
    for (run, findings) in input.runs {
        if let Some(error) = &run.error {
            reasons.push(format!(
                "the {} scanner did not finish ({error}): no verdict without a complete scan",
                run.name
            ));
        }
        for f in findings {
            let same = merged.iter().position(|(m, _)| {
                m.package == f.package && m.installed == f.installed && same_advisory(m, &f)
            });
            let entry = match same {
                Some(i) => &mut merged[i],
                None => {
                    merged.push((f.clone(), Vec::new()));
                    let last = merged.len() - 1;
                    &mut merged[last]
                }
            };
            if entry.0.fixed.is_none() {
                entry.0.fixed = f.fixed.clone();
            }
            entry.0.severity = entry.0.severity.max(f.severity);
            for a in f.aliases.iter().chain(std::iter::once(&f.id)) {
                if !a.eq_ignore_ascii_case(&entry.0.id) && !entry.0.aliases.contains(a) {
                    entry.0.aliases.push(a.clone());
                }
            }
            if !entry.1.contains(&run.name) {
                entry.1.push(run.name.clone());
            }
        }
        scanners.push(run);
    }
    if scanners.is_empty() {
        reasons.push("no scanner ran: configure at least one in [scan] scanners".to_string());
    }

    let mut summary = Summary::default();
    let mut judged = Vec::with_capacity(merged.len());
    for (finding, names) in merged {
        let effective = policy.effective(finding.severity);
        let (holding, expired): (Vec<&Waiver>, Vec<&Waiver>) = policy
            .waivers
            .iter()
            .filter(|w| w.covers(&finding))
            .partition(|w| w.expires >= today);
        let decision = if effective < policy.severity {
            Decision::BelowThreshold
        } else if policy.fixed_only && finding.fixed.as_deref().is_none_or(str::is_empty) {
            Decision::NoFix
        } else if let Some(w) = holding.first() {
            Decision::Waived {
                reason: w.reason.clone(),
                approved_by: w.approved_by.clone(),
                expires: w.expires,
            }
        } else {
            Decision::Blocking
        };
        match effective {
            Severity::Critical => summary.critical += 1,
            Severity::High => summary.high += 1,
            Severity::Medium => summary.medium += 1,
            Severity::Low => summary.low += 1,
            Severity::Unknown => summary.unknown += 1,
        }
        match &decision {
            Decision::Blocking => {
                summary.blocking += 1;
                let expired_note = if expired.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (its waiver expired on {})",
                        expired.iter().map(|w| w.expires).max().unwrap_or(today)
                    )
                };
                let severity = if finding.severity == Severity::Unknown {
                    format!("severity unknown, counted as {effective}")
                } else {
                    effective.to_string()
                };
                reasons.push(format!(
                    "{} ({severity}) in {} {} {}{}{expired_note}",
                    finding.id,
                    finding.kind,
                    finding.package,
                    finding.installed,
                    match &finding.fixed {
                        Some(v) if !v.is_empty() => format!(", fixed in {v}"),
                        _ => ", no fix yet".to_string(),
                    }
                ));
            }
            Decision::Waived { .. } => summary.waived += 1,
            _ => {}
        }
        judged.push(Judged {
            finding,
            scanners: names,
            effective_severity: effective,
            decision,
            expired_waivers: expired.into_iter().cloned().collect(),
        });
    }
    // Most severe first, then by package.
    judged.sort_by(|a, b| {
        b.effective_severity
            .cmp(&a.effective_severity)
            .then_with(|| a.finding.package.cmp(&b.finding.package))
            .then_with(|| a.finding.id.cmp(&b.finding.id))
    });
    Report {
        schema: 1,
        image: input.image.to_string(),
        repository: input.repository.to_string(),
        digest: input.digest.to_string(),
        created: input.created.to_string(),
        verdict: if reasons.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        reasons,
        summary,
        packages: input.packages,
        scanners,
        policy: policy.clone(),
        findings: judged,
    }
}

/// Judge a stored report again under today's policy (a waiver added or
/// expired, a threshold changed) without scanning again. Scanner failures
/// stay failures.
pub fn reevaluate(policy: &Policy, report: &Report, today: Date) -> Report {
    let mut runs: Vec<(ScannerRun, Vec<Finding>)> = report
        .scanners
        .iter()
        .map(|s| (s.clone(), Vec::new()))
        .collect();
    for j in &report.findings {
        for name in &j.scanners {
            if let Some((_, fs)) = runs.iter_mut().find(|(r, _)| &r.name == name) {
                fs.push(j.finding.clone());
            }
        }
    }
    evaluate(
        policy,
        Input {
            image: &report.image,
            repository: &report.repository,
            digest: &report.digest,
            created: &report.created,
            packages: report.packages,
            runs,
        },
        today,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::PackageKind;

    fn finding(id: &str, package: &str, sev: Severity, fixed: Option<&str>) -> Finding {
        Finding {
            id: id.into(),
            aliases: vec![format!("CVE-{id}")],
            kind: PackageKind::Pypi,
            package: package.into(),
            installed: "1.0".into(),
            fixed: fixed.map(str::to_string),
            severity: sev,
            title: String::new(),
            url: None,
        }
    }

    fn run(name: &str, error: Option<&str>, findings: Vec<Finding>) -> (ScannerRun, Vec<Finding>) {
        (
            ScannerRun {
                name: name.into(),
                detail: String::new(),
                error: error.map(str::to_string),
                findings: findings.len(),
                duration_ms: 1,
            },
            findings,
        )
    }

    fn day(s: &str) -> Date {
        Date::parse(s).expect("valid in the test")
    }

    fn eval(policy: &Policy, runs: Vec<(ScannerRun, Vec<Finding>)>, today: &str) -> Report {
        evaluate(
            policy,
            Input {
                image: "img",
                repository: "r/img",
                digest: "sha256:00",
                created: "2026-11-26T00:00:00Z",
                packages: 3,
                runs,
            },
            day(today),
        )
    }

    fn waiver(id: &str, expires: &str) -> Waiver {
        Waiver {
            id: id.into(),
            packages: vec![],
            reason: "not reachable from notebooks".into(),
            expires: day(expires),
            approved_by: "alice".into(),
        }
    }

    #[test]
    fn dates_parse_and_order() {
        assert_eq!(day("2027-02-28").to_string(), "2027-02-28");
        assert!(day("2026-12-31") < day("2027-01-01"));
        for bad in [
            "2027-02-29",
            "2027-13-01",
            "2027-1-01",
            "27-01-01",
            "2027-01-00",
            "x",
        ] {
            assert!(Date::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(day("2028-02-29").day, 29);
        assert_eq!(Date::from_unix(0), day("1970-01-01"));
        assert_eq!(Date::from_unix(1_795_651_200), day("2026-11-26"));
        assert_eq!(Date::from_unix(951_782_400), day("2000-02-29"));
    }

    #[test]
    fn threshold_decides() {
        let p = Policy::default();
        let r = eval(
            &p,
            vec![run(
                "osv",
                None,
                vec![
                    finding("A", "x", Severity::Critical, Some("2.0")),
                    finding("B", "y", Severity::Medium, Some("2.0")),
                ],
            )],
            "2026-11-26",
        );
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.summary.blocking, 1);
        assert_eq!(r.summary.critical, 1);
        assert_eq!(r.summary.medium, 1);
        assert_eq!(r.findings[0].decision, Decision::Blocking);
        assert_eq!(r.findings[1].decision, Decision::BelowThreshold);
        assert_eq!(r.reasons, vec!["A (critical) in pypi x 1.0, fixed in 2.0"]);

        let lenient = Policy {
            severity: Severity::Critical,
            ..Policy::default()
        };
        let r = eval(
            &lenient,
            vec![run(
                "osv",
                None,
                vec![finding("B", "y", Severity::High, Some("2.0"))],
            )],
            "2026-11-26",
        );
        assert_eq!(r.verdict, Verdict::Pass);
    }

    #[test]
    fn fixed_only_and_unknown_severity() {
        let f = vec![
            finding("A", "x", Severity::High, None),
            finding("B", "y", Severity::Unknown, Some("2")),
        ];
        let r = eval(
            &Policy::default(),
            vec![run("osv", None, f.clone())],
            "2026-11-26",
        );
        assert_eq!(r.findings.len(), 2);
        let a = r
            .findings
            .iter()
            .find(|j| j.finding.id == "A")
            .expect("valid in the test");
        assert_eq!(a.decision, Decision::NoFix);
        let b = r
            .findings
            .iter()
            .find(|j| j.finding.id == "B")
            .expect("valid in the test");
        assert_eq!(b.effective_severity, Severity::High);
        assert_eq!(b.decision, Decision::Blocking);

        let all = Policy {
            fixed_only: false,
            unknown_severity: Severity::Low,
            ..Policy::default()
        };
        let r = eval(&all, vec![run("osv", None, f)], "2026-11-26");
        let a = r
            .findings
            .iter()
            .find(|j| j.finding.id == "A")
            .expect("valid in the test");
        assert_eq!(a.decision, Decision::Blocking);
        assert_eq!(r.reasons, vec!["A (high) in pypi x 1.0, no fix yet"]);
    }

    #[test]
    fn waivers_hold_until_their_last_day_then_count_as_none() {
        let p = Policy {
            waivers: vec![waiver("CVE-A", "2026-12-31")],
            ..Policy::default()
        };
        let f = vec![finding("A", "x", Severity::Critical, Some("2.0"))];
        // By alias, on the last day.
        let r = eval(&p, vec![run("osv", None, f.clone())], "2026-12-31");
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.summary.waived, 1);
        assert!(matches!(r.findings[0].decision, Decision::Waived { .. }));
        // The day after: blocking again, and the report says why.
        let r = eval(&p, vec![run("osv", None, f.clone())], "2027-01-01");
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.findings[0].expired_waivers.len(), 1);
        assert!(
            r.reasons[0].contains("waiver expired on 2026-12-31"),
            "{:?}",
            r.reasons
        );
        // A waiver for another package does not cover it.
        let other = Policy {
            waivers: vec![Waiver {
                packages: vec!["other".into()],
                ..waiver("A", "2030-01-01")
            }],
            ..Policy::default()
        };
        assert_eq!(
            eval(&other, vec![run("osv", None, f)], "2026-11-26").verdict,
            Verdict::Fail
        );
    }

    #[test]
    fn a_scanner_that_did_not_finish_fails_closed() {
        for error in [
            "crashed with signal 11",
            "timed out after 600 s",
            "no database",
        ] {
            let r = eval(
                &Policy::default(),
                vec![run("osv", None, vec![]), run("trivy", Some(error), vec![])],
                "2026-11-26",
            );
            assert_eq!(r.verdict, Verdict::Fail);
            assert!(r.reasons[0].contains(error), "{:?}", r.reasons);
            assert!(r.reasons[0].starts_with("the trivy scanner did not finish"));
        }
        let r = eval(&Policy::default(), vec![], "2026-11-26");
        assert_eq!(r.verdict, Verdict::Fail, "no scanner, no verdict");
    }

    #[test]
    fn findings_of_two_scanners_merge() {
        let f = finding("A", "x", Severity::High, Some("2.0"));
        let mut g = f.clone();
        g.severity = Severity::Critical;
        let r = eval(
            &Policy::default(),
            vec![run("osv", None, vec![f]), run("trivy", None, vec![g])],
            "2026-11-26",
        );
        assert_eq!(r.findings.len(), 1);
        assert_eq!(r.findings[0].scanners, vec!["osv", "trivy"]);
        assert_eq!(r.findings[0].effective_severity, Severity::Critical);
    }

    #[test]
    fn an_advisory_under_two_names_is_one_finding_and_one_waiver_covers_it() {
        // OSV calls it PYSEC-2021-66 with alias CVE-2020-28493; Trivy calls
        // it CVE-2020-28493 with no aliases.
        let mut osv = finding("PYSEC-2021-66", "Jinja2", Severity::Unknown, Some("2.11.3"));
        osv.aliases = vec!["CVE-2020-28493".into()];
        let mut trivy = finding("CVE-2020-28493", "Jinja2", Severity::High, Some("2.11.3"));
        trivy.aliases = vec![];
        let runs = || {
            vec![
                run("osv", None, vec![osv.clone()]),
                run("trivy", None, vec![trivy.clone()]),
            ]
        };
        let r = eval(&Policy::default(), runs(), "2026-11-26");
        assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
        assert_eq!(r.findings[0].scanners, vec!["osv", "trivy"]);
        // The waiver names the other scanner's id and a differently
        // spelled package: it still covers the one finding.
        let p = Policy {
            waivers: vec![Waiver {
                packages: vec!["jinja2".into()],
                ..waiver("PYSEC-2021-66", "2030-01-01")
            }],
            ..Policy::default()
        };
        let r = eval(&p, runs(), "2026-11-26");
        assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.reasons);
        assert_eq!(r.summary.waived, 1);
        let spelled = Policy {
            waivers: vec![Waiver {
                packages: vec!["typing_extensions".into()],
                ..waiver("A", "2030-01-01")
            }],
            ..Policy::default()
        };
        let f = finding("A", "typing-extensions", Severity::High, Some("2"));
        assert_eq!(
            eval(&spelled, vec![run("osv", None, vec![f])], "2026-11-26").verdict,
            Verdict::Pass
        );
    }

    #[test]
    fn overrides_and_reevaluation() {
        let base = Policy {
            waivers: vec![waiver("B", "2030-01-01")],
            ..Policy::default()
        };
        let o = PolicyOverride {
            severity: Some(Severity::Critical),
            fixed_only: None,
            unknown_severity: None,
            waivers: vec![waiver("A", "2030-01-01")],
        };
        let p = base.with(&o);
        assert_eq!(p.severity, Severity::Critical);
        assert!(p.fixed_only);
        assert_eq!(p.waivers.len(), 2);

        let failing = eval(
            &Policy::default(),
            vec![run(
                "osv",
                None,
                vec![finding("A", "x", Severity::High, Some("2"))],
            )],
            "2026-11-26",
        );
        assert_eq!(failing.verdict, Verdict::Fail);
        let again = reevaluate(&p, &failing, day("2026-11-26"));
        assert_eq!(again.verdict, Verdict::Pass);
        assert_eq!(again.findings.len(), 1);
        // JSON round trip keeps everything.
        let json = serde_json::to_string(&again).expect("valid in the test");
        let back: Report = serde_json::from_str(&json).expect("valid in the test");
        assert_eq!(back, again);
    }
}
