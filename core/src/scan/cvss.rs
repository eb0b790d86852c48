//! CVSS base scores from vector strings: v3.0 and v3.1 (FIRST's
//! specification, section 7, with each version's Roundup) and v2 (FIRST's
//! v2 guide, section 3.2.1), and the severity band of a score.
//!
//! Only the base metrics count; temporal and environmental metrics are
//! accepted and ignored. CVSS v4 vectors are not scored here (`None`): the
//! OSV matcher falls back to the advisory's own severity for them.
//!
//! Pure: no I/O.

use super::Severity;

/// The base score (0.0–10.0) of a CVSS v3.x or v2 vector, or `None` when the
/// string is not a complete, valid vector of those versions.
pub fn score(vector: &str) -> Option<f64> {
    parse(vector).map(|(_, score)| score)
}

/// The severity band of the vector's base score: v3 `0.0` unknown (CVSS
/// "none"), `0.1–3.9` low, `4.0–6.9` medium, `7.0–8.9` high, `9.0–10.0`
/// critical; v2 (NVD's bands) `0.0–3.9` low, `4.0–6.9` medium, `7.0–10.0`
/// high.
pub fn severity(vector: &str) -> Option<Severity> {
    let (version, score) = parse(vector)?;
    Some(match version {
        Major::V3 => match score {
            s if s <= 0.0 => Severity::Unknown,
            s if s < 4.0 => Severity::Low,
            s if s < 7.0 => Severity::Medium,
            s if s < 9.0 => Severity::High,
            _ => Severity::Critical,
        },
        Major::V2 => match score {
            s if s < 4.0 => Severity::Low,
            s if s < 7.0 => Severity::Medium,
            _ => Severity::High,
        },
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Major {
    V2,
    V3,
}

fn parse(vector: &str) -> Option<(Major, f64)> {
    let vector = vector.trim();
    if let Some(rest) = vector.strip_prefix("CVSS:3.1/") {
        Some((Major::V3, v3(rest, roundup_31)?))
    } else if let Some(rest) = vector.strip_prefix("CVSS:3.0/") {
        Some((Major::V3, v3(rest, roundup_30)?))
    } else if vector.starts_with("CVSS:") {
        None
    } else {
        let inner = vector
            .strip_prefix('(')
            .and_then(|v| v.strip_suffix(')'))
            .unwrap_or(vector);
        Some((Major::V2, v2(inner)?))
    }
}

/// The metrics of a vector as `(name, value)`, each name at most once and
/// among `known`; `None` otherwise.
fn metrics<'a>(rest: &'a str, known: &[&str]) -> Option<Vec<(&'a str, &'a str)>> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for part in rest.split('/') {
        let (name, value) = part.split_once(':')?;
        if value.is_empty() || !known.contains(&name) || seen.iter().any(|(n, _)| *n == name) {
            return None;
        }
        seen.push((name, value));
    }
    Some(seen)
}

fn get<'a>(metrics: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    metrics.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

const V3_METRICS: &[&str] = &[
    "AV", "AC", "PR", "UI", "S", "C", "I", "A", // base
    "E", "RL", "RC", // temporal
    "CR", "IR", "AR", "MAV", "MAC", "MPR", "MUI", "MS", "MC", "MI", "MA", // environmental
];

fn v3(rest: &str, roundup: fn(f64) -> f64) -> Option<f64> {
    let m = metrics(rest, V3_METRICS)?;
    let changed = match get(&m, "S")? {
        "U" => false,
        "C" => true,
        _ => return None,
    };
    let av: f64 = match get(&m, "AV")? {
        "N" => 0.85,
        "A" => 0.62,
        "L" => 0.55,
        "P" => 0.2,
        _ => return None,
    };
    let ac = match get(&m, "AC")? {
        "L" => 0.77,
        "H" => 0.44,
        _ => return None,
    };
    let pr = match (get(&m, "PR")?, changed) {
        ("N", _) => 0.85,
        ("L", false) => 0.62,
        ("L", true) => 0.68,
        ("H", false) => 0.27,
        ("H", true) => 0.5,
        _ => return None,
    };
    let ui = match get(&m, "UI")? {
        "N" => 0.85,
        "R" => 0.62,
        _ => return None,
    };
    let cia = |name| match get(&m, name)? {
        "H" => Some(0.56),
        "L" => Some(0.22),
        "N" => Some(0.0),
        _ => None,
    };
    let (c, i, a) = (cia("C")?, cia("I")?, cia("A")?);

    let iss = 1.0 - (1.0 - c) * (1.0 - i) * (1.0 - a);
    let impact = if changed {
        7.52 * (iss - 0.029) - 3.25 * (iss - 0.02_f64).powi(15)
    } else {
        6.42 * iss
    };
    let exploitability = 8.22 * av * ac * pr * ui;
    Some(if impact <= 0.0 {
        0.0
    } else if changed {
        roundup((1.08 * (impact + exploitability)).min(10.0))
    } else {
        roundup((impact + exploitability).min(10.0))
    })
}

/// CVSS v3.1's Roundup (Appendix A): the smallest one-decimal number not
/// below the input, computed on integers so that 4.000000000000001 is 4.0.
fn roundup_31(x: f64) -> f64 {
    let int = (x * 100_000.0).round() as i64;
    if int % 10_000 == 0 {
        int as f64 / 100_000.0
    } else {
        (int / 10_000 + 1) as f64 / 10.0
    }
}

/// CVSS v3.0's Roundup: the smallest one-decimal number not below the input.
fn roundup_30(x: f64) -> f64 {
    (x * 10.0).ceil() / 10.0
}

const V2_METRICS: &[&str] = &[
    "AV", "AC", "Au", "C", "I", "A", // base
    "E", "RL", "RC", // temporal
    "CDP", "TD", "CR", "IR", "AR", // environmental
];

fn v2(rest: &str) -> Option<f64> {
    let m = metrics(rest, V2_METRICS)?;
    let av: f64 = match get(&m, "AV")? {
        "L" => 0.395,
        "A" => 0.646,
        "N" => 1.0,
        _ => return None,
    };
    let ac = match get(&m, "AC")? {
        "H" => 0.35,
        "M" => 0.61,
        "L" => 0.71,
        _ => return None,
    };
    let au = match get(&m, "Au")? {
        "M" => 0.45,
        "S" => 0.56,
        "N" => 0.704,
        _ => return None,
    };
    let cia = |name| match get(&m, name)? {
        "N" => Some(0.0),
        "P" => Some(0.275),
        "C" => Some(0.660),
        _ => None,
    };
    let (c, i, a) = (cia("C")?, cia("I")?, cia("A")?);
    let impact = 10.41 * (1.0 - (1.0 - c) * (1.0 - i) * (1.0 - a));
    let exploitability = 20.0 * av * ac * au;
    let f_impact = if impact == 0.0 { 0.0 } else { 1.176 };
    let base = (0.6 * impact + 0.4 * exploitability - 1.5) * f_impact;
    Some((base * 10.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(vector: &str, expect_score: f64, expect_severity: Severity) {
        assert_eq!(score(vector), Some(expect_score), "{vector}");
        assert_eq!(severity(vector), Some(expect_severity), "{vector}");
    }

    #[test]
    fn v31_examples_from_first() {
        // FIRST's CVSS v3.1 examples document (CVE in the comment).
        let table = [
            (
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N",
                6.1,
                Severity::Medium,
            ), // CVE-2013-1937
            (
                "CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:L/I:L/A:N",
                6.4,
                Severity::Medium,
            ), // CVE-2013-0375
            (
                "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N",
                3.1,
                Severity::Low,
            ), // CVE-2014-3566
            (
                "CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H",
                9.9,
                Severity::Critical,
            ), // CVE-2012-1516
            (
                "CVSS:3.1/AV:L/AC:L/PR:H/UI:N/S:U/C:L/I:L/A:L",
                4.2,
                Severity::Medium,
            ), // CVE-2009-0783
            (
                "CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H",
                8.8,
                Severity::High,
            ), // CVE-2012-0384
            (
                "CVSS:3.1/AV:L/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H",
                7.8,
                Severity::High,
            ), // CVE-2015-1098
            (
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N",
                7.5,
                Severity::High,
            ), // CVE-2014-0160
            (
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
                9.8,
                Severity::Critical,
            ), // CVE-2014-6271
            (
                "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:C/C:N/I:H/A:N",
                6.8,
                Severity::Medium,
            ), // CVE-2008-1447
            (
                "CVSS:3.1/AV:P/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
                6.8,
                Severity::Medium,
            ), // CVE-2014-2005
            (
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:L/I:N/A:N",
                5.8,
                Severity::Medium,
            ), // CVE-2010-0467
            (
                "CVSS:3.1/AV:A/AC:L/PR:N/UI:N/S:C/C:H/I:N/A:H",
                9.3,
                Severity::Critical,
            ), // CVE-2013-6014
            (
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H",
                8.8,
                Severity::High,
            ), // CVE-2016-1645
            (
                "CVSS:3.1/AV:L/AC:L/PR:H/UI:N/S:C/C:H/I:H/A:H",
                8.2,
                Severity::High,
            ), // CVE-2016-5729
            // No impact at all: 0.0, CVSS "none".
            (
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N",
                0.0,
                Severity::Unknown,
            ),
            (
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:N/I:N/A:N",
                0.0,
                Severity::Unknown,
            ),
        ];
        for (vector, s, sev) in table {
            check(vector, s, sev);
        }
    }

    #[test]
    fn v3_vectors_from_the_fixtures() {
        // From tests/fixtures/osv/PyPI (PyPA advisories), scores as NVD shows them.
        check(
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            9.8,
            Severity::Critical,
        ); // PYSEC-2024-11
        check(
            "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N",
            7.5,
            Severity::High,
        ); // PYSEC-2017-105
        check(
            "CVSS:3.0/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N",
            6.1,
            Severity::Medium,
        ); // PYSEC-2017-106
    }

    #[test]
    fn roundup_avoids_floating_point_noise() {
        // CVSS v3.1 specification, Appendix A.
        assert_eq!(roundup_31(4.000_000_000_000_001), 4.0);
        assert_eq!(roundup_30(4.000_000_000_000_001), 4.1);
        assert_eq!(roundup_31(4.02), 4.1);
        assert_eq!(roundup_31(4.0), 4.0);
        assert_eq!(roundup_31(9.999_99), 10.0);
    }

    /// Every v3 base vector: the sum of the scores (in tenths) and the count
    /// in each band, as the Python `cvss` package (reference implementation
    /// of FIRST's formulas) computes them: 142706; none 96, low 416, medium
    /// 1464, high 555, critical 61. Every v2 base vector: 38007.
    #[test]
    fn whole_metric_space_matches_the_reference() {
        for version in ["3.0", "3.1"] {
            let (mut total, mut bands) = (0_i64, [0_usize; 5]);
            for av in ["N", "A", "L", "P"] {
                for ac in ["L", "H"] {
                    for pr in ["N", "L", "H"] {
                        for ui in ["N", "R"] {
                            for s in ["U", "C"] {
                                for c in ["H", "L", "N"] {
                                    for i in ["H", "L", "N"] {
                                        for a in ["H", "L", "N"] {
                                            let v = format!(
                                                "CVSS:{version}/AV:{av}/AC:{ac}/PR:{pr}/UI:{ui}/S:{s}/C:{c}/I:{i}/A:{a}"
                                            );
                                            total += (score(&v).expect("test input") * 10.0).round()
                                                as i64;
                                            bands[severity(&v).expect("test input") as usize] += 1;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            assert_eq!(total, 142_706, "CVSS {version}");
            assert_eq!(bands, [96, 416, 1464, 555, 61], "CVSS {version}");
        }
        let mut total = 0_i64;
        for av in ["L", "A", "N"] {
            for ac in ["H", "M", "L"] {
                for au in ["M", "S", "N"] {
                    for c in ["N", "P", "C"] {
                        for i in ["N", "P", "C"] {
                            for a in ["N", "P", "C"] {
                                let v = format!("AV:{av}/AC:{ac}/Au:{au}/C:{c}/I:{i}/A:{a}");
                                total += (score(&v).expect("test input") * 10.0).round() as i64;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(total, 38_007);
    }

    #[test]
    fn v3_accepts_temporal_metrics_and_any_order() {
        check(
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:P/RL:O/RC:C",
            9.8,
            Severity::Critical,
        );
        check(
            "CVSS:3.1/S:U/AV:N/AC:L/PR:N/UI:N/C:H/I:H/A:H",
            9.8,
            Severity::Critical,
        );
    }

    #[test]
    fn v2_examples_from_first() {
        // FIRST's CVSS v2 guide, section 3.3, and NVD.
        check("AV:N/AC:L/Au:N/C:P/I:P/A:P", 7.5, Severity::High);
        check("AV:N/AC:L/Au:N/C:N/I:N/A:C", 7.8, Severity::High); // CVE-2002-0392
        check("AV:N/AC:L/Au:N/C:C/I:C/A:C", 10.0, Severity::High); // CVE-2003-0818
        check("AV:L/AC:H/Au:N/C:C/I:C/A:C", 6.2, Severity::Medium); // CVE-2003-0062
        check("AV:N/AC:M/Au:N/C:P/I:N/A:N", 4.3, Severity::Medium);
        check("AV:L/AC:L/Au:N/C:P/I:N/A:N", 2.1, Severity::Low);
        check("(AV:N/AC:L/Au:N/C:P/I:P/A:P)", 7.5, Severity::High);
        check("AV:N/AC:L/Au:N/C:N/I:N/A:N", 0.0, Severity::Low);
    }

    #[test]
    fn rejects_bad_vectors() {
        for vector in [
            "",
            "CVSS:3.1/",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H", // A missing
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:X", // bad value
            "CVSS:3.1/AV:N/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", // twice
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/ZZ:1", // unknown metric
            "CVSS:3.2/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
            "AV:N/AC:L/Au:N/C:P/I:P",
            "AV:N/AC:L/Au:X/C:P/I:P/A:P",
            "high",
        ] {
            assert_eq!(score(vector), None, "{vector}");
            assert_eq!(severity(vector), None, "{vector}");
        }
    }
}
