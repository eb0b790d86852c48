//! Possible typosquats: a requested pip package whose name is one typo away
//! from a popular project (`numpyy`, `reqeusts`), or the same once
//! separators and look-alike digits are ignored (`scikitlearn`, `nump0`).
//!
//! A match is not proof of anything (plenty of honest projects have close
//! names), so it never stops a request: it asks a maintainer to look before
//! approving. The popular list is `popular-pypi.txt` next to this file.

use std::sync::LazyLock;

const POPULAR_TEXT: &str = include_str!("popular-pypi.txt");

/// Popular names shorter than this are only matched by [`key`]: one edit
/// away from a three-letter name (`jax`, `ray`, `six`) is most of the
/// alphabet, and flagging it all would teach maintainers to ignore flags.
const MIN_EDIT_LEN: usize = 4;

static POPULAR: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    POPULAR_TEXT
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
});

/// The popular projects, most used first.
pub fn popular() -> &'static [&'static str] {
    &POPULAR
}

/// The popular project that `name` (PEP 503-normalised) may imitate, if
/// any. `None` for the popular names themselves.
pub fn suspects(name: &str) -> Option<&'static str> {
    if name.is_empty() || POPULAR.contains(&name) {
        return None;
    }
    let k = key(name);
    if let Some(p) = POPULAR.iter().find(|p| key(p) == k) {
        return Some(p);
    }
    POPULAR
        .iter()
        .find(|p| p.len() >= MIN_EDIT_LEN && within_one_edit(name.as_bytes(), p.as_bytes()))
        .copied()
}

/// The name as it reads at a glance: without separators, with digits that
/// pass for letters (`0` → `o`, `1` → `l`) and letter pairs that pass for
/// one letter (`rn` → `m`, `vv` → `w`) replaced.
fn key(name: &str) -> String {
    let s: String = name
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.'))
        .map(|c| match c {
            '0' => 'o',
            '1' => 'l',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    s.replace("rn", "m").replace("vv", "w")
}

/// Damerau-Levenshtein distance (optimal string alignment) of at most one:
/// one letter inserted, deleted, replaced, or two neighbours swapped.
fn within_one_edit(a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return false;
    }
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (a, b) = (&a[prefix..], &b[prefix..]);
    match (a.len(), b.len()) {
        (la, lb) if la == lb => {
            // One replacement, or one swap of neighbours.
            a[1..] == b[1..] || (la >= 2 && a[0] == b[1] && a[1] == b[0] && a[2..] == b[2..])
        }
        (la, lb) if la > lb => a[1..] == *b,
        _ => b[1..] == *a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::normalize_pypi_name;

    #[test]
    fn the_list_is_normalised_unique_and_large_enough() {
        let list = popular();
        assert!(list.len() >= 250, "{} names", list.len());
        let mut seen = std::collections::BTreeSet::new();
        for name in list {
            assert_eq!(*name, normalize_pypi_name(name), "{name} is not normalised");
            assert!(seen.insert(*name), "{name} is listed twice");
        }
        for expected in [
            "numpy",
            "pandas",
            "scipy",
            "matplotlib",
            "requests",
            "torch",
            "tensorflow",
            "scikit-learn",
            "transformers",
        ] {
            assert!(list.contains(&expected), "{expected}");
        }
    }

    #[test]
    fn names_one_typo_away_are_suspects() {
        for (name, imitates) in [
            ("numpyy", "numpy"),
            ("nunpy", "numpy"),
            ("reqeusts", "requests"),
            ("request", "requests"),
            ("pandsa", "pandas"),
            ("scikitlearn", "scikit-learn"),
            ("sci-kit-learn", "scikit-learn"),
            ("rnatplotlib", "matplotlib"),
            ("nump0", "numpy"),
            ("b0to3", "boto3"),
            ("1xml", "lxml"),
            ("py-yaml", "pyyaml"),
            ("tensorfow", "tensorflow"),
            ("beautifulsoup", "beautifulsoup4"),
        ] {
            assert_eq!(suspects(name), Some(imitates), "{name}");
        }
    }

    #[test]
    fn popular_and_unrelated_names_are_not_suspects() {
        for name in [
            "numpy",
            "pandas",
            "scikit-learn",
            "requests",
            "tox",
            "nox",
            "toml",
            "tomli",
            "labforge-helpers",
            "qiskit",
            "music21",
            "jax2",
            "torch-geometric",
            "",
        ] {
            assert_eq!(suspects(name), None, "{name}");
        }
    }

    #[test]
    fn one_edit_means_one_edit() {
        let yes = [
            ("ab", "abc"),
            ("abc", "ab"),
            ("abc", "abd"),
            ("abcd", "abdc"),
            ("bac", "abc"),
        ];
        for (a, b) in yes {
            assert!(within_one_edit(a.as_bytes(), b.as_bytes()), "{a} {b}");
        }
        let no = [
            ("abc", "abc"),
            ("abc", "a"),
            ("abcd", "badc"),
            ("abc", "cba"),
            ("abcd", "abef"),
        ];
        for (a, b) in no {
            assert!(!within_one_edit(a.as_bytes(), b.as_bytes()), "{a} {b}");
        }
    }
}
