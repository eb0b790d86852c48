//! The package diff between two inventories of an image (`labforge diff
//! IMAGE OLD NEW`): packages added, removed, upgraded, downgraded, and those
//! whose versions changed in a way their ecosystem cannot order.
//!
//! A package is the same package in both inventories when its kind, name
//! (PEP 503-normalised for Python), architecture and environment agree. The
//! environment is where it is installed: for Python distributions the folder
//! holding their `*.dist-info`/`*.egg-info`, for conda packages the prefix
//! holding `conda-meta/`; dpkg has one database per image. Versions are
//! ordered by their ecosystem: Debian for dpkg, PEP 440 for Python, PEP 440
//! when both parse and otherwise a segment-wise order for conda.
//!
//! Pure: no I/O.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::debversion::DebVersion;
use super::{Inventory, Package, PackageKind, pep440};

/// A package present in both inventories with another version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Change {
    pub kind: PackageKind,
    /// The name as the new inventory spells it.
    pub name: String,
    pub old: String,
    pub new: String,
}

/// What changed between two inventories, each list sorted by kind and name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageDiff {
    pub added: Vec<Package>,
    pub removed: Vec<Package>,
    pub upgraded: Vec<Change>,
    pub downgraded: Vec<Change>,
    /// Versions that differ but do not compare (one of them does not parse
    /// in its ecosystem).
    pub changed: Vec<Change>,
}

impl PackageDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.upgraded.is_empty()
            && self.downgraded.is_empty()
            && self.changed.is_empty()
    }
}

/// What makes two packages the same package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    kind: PackageKind,
    name: String,
    arch: String,
    env: String,
}

fn key(p: &Package) -> Key {
    let name = match p.kind {
        PackageKind::Pypi => pep440::normalize_name(&p.name),
        _ => p.name.clone(),
    };
    Key {
        kind: p.kind,
        name,
        arch: p.arch.clone(),
        env: environment(p),
    }
}

/// The folder a package lives in, as far as telling environments apart goes.
fn environment(p: &Package) -> String {
    let parts: Vec<&str> = p.path.trim_matches('/').split('/').collect();
    let holder = match p.kind {
        PackageKind::Deb => return String::new(),
        PackageKind::Pypi => parts.iter().position(|c| {
            let c = c.to_ascii_lowercase();
            c.ends_with(".dist-info") || c.ends_with(".egg-info") || c.ends_with(".egg")
        }),
        PackageKind::Conda => parts.iter().position(|c| *c == "conda-meta"),
        PackageKind::Other => None,
    };
    let end = holder.unwrap_or(parts.len().saturating_sub(1));
    parts[..end].join("/")
}

/// The ecosystem's order of two versions, `None` when they do not compare.
fn compare(kind: PackageKind, old: &str, new: &str) -> Option<Ordering> {
    let pep = || match (pep440::Version::parse(old), pep440::Version::parse(new)) {
        (Ok(a), Ok(b)) => Some(a.cmp(&b)),
        _ => None,
    };
    match kind {
        PackageKind::Deb => match (DebVersion::parse(old), DebVersion::parse(new)) {
            (Ok(a), Ok(b)) => Some(a.cmp(&b)),
            _ => None,
        },
        PackageKind::Pypi => pep(),
        PackageKind::Conda | PackageKind::Other => {
            pep().or_else(|| Some(segments(old).cmp(&segments(new))))
        }
    }
}

/// A segment of a version that is not PEP 440: strings sort before numbers.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Segment<'a> {
    Str(&'a str),
    /// Digits without leading zeros, ordered by length then text: by value.
    Num(usize, &'a str),
}

/// Splits at `.`, `_` and `-`, and between runs of digits and other
/// characters: `1.2rc3_b` → 1, 2, rc, 3, b.
fn segments(v: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in v.trim().split(['.', '_', '-']) {
        let mut rest = part;
        while let Some(first) = rest.chars().next() {
            let digit = first.is_ascii_digit();
            let end = rest
                .find(|c: char| c.is_ascii_digit() != digit)
                .unwrap_or(rest.len());
            let (run, tail) = rest.split_at(end);
            out.push(if digit {
                let n = run.trim_start_matches('0');
                Segment::Num(n.len(), n)
            } else {
                Segment::Str(run)
            });
            rest = tail;
        }
    }
    out
}

fn group(inventory: &Inventory) -> BTreeMap<Key, Vec<&Package>> {
    let mut map: BTreeMap<Key, Vec<&Package>> = BTreeMap::new();
    for p in &inventory.packages {
        map.entry(key(p)).or_default().push(p);
    }
    map
}

/// Compares two inventories of an image.
pub fn diff(old: &Inventory, new: &Inventory) -> PackageDiff {
    let (old_map, new_map) = (group(old), group(new));
    let mut out = PackageDiff::default();

    for (k, olds) in &old_map {
        let Some(news) = new_map.get(k) else {
            out.removed.extend(olds.iter().map(|p| (*p).clone()));
            continue;
        };
        if let ([o], [n]) = (olds.as_slice(), news.as_slice()) {
            if o.version == n.version {
                continue;
            }
            let change = Change {
                kind: n.kind,
                name: n.name.clone(),
                old: o.version.clone(),
                new: n.version.clone(),
            };
            match compare(k.kind, &o.version, &n.version) {
                Some(Ordering::Less) => out.upgraded.push(change),
                Some(Ordering::Greater) => out.downgraded.push(change),
                Some(Ordering::Equal) => {}
                None => out.changed.push(change),
            }
            continue;
        }
        // The same package more than once in one place (a broken install):
        // compare the sets of versions.
        let same = |a: &Package, b: &Package| a.version == b.version;
        out.removed.extend(
            olds.iter()
                .filter(|o| !news.iter().any(|n| same(o, n)))
                .map(|p| (*p).clone()),
        );
        out.added.extend(
            news.iter()
                .filter(|n| !olds.iter().any(|o| same(o, n)))
                .map(|p| (*p).clone()),
        );
    }
    for (k, news) in &new_map {
        if !old_map.contains_key(k) {
            out.added.extend(news.iter().map(|p| (*p).clone()));
        }
    }

    out.added.sort();
    out.removed.sort();
    out.upgraded.sort();
    out.downgraded.sort();
    out.changed.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(kind: PackageKind, name: &str, version: &str, path: &str) -> Package {
        Package {
            kind,
            name: name.to_string(),
            version: version.to_string(),
            source: None,
            arch: if kind == PackageKind::Deb {
                "amd64".to_string()
            } else {
                String::new()
            },
            license: None,
            path: path.to_string(),
        }
    }

    fn deb(name: &str, version: &str) -> Package {
        pkg(PackageKind::Deb, name, version, "var/lib/dpkg/status")
    }

    const SITE: &str = "opt/conda/lib/python3.11/site-packages";

    fn pypi(name: &str, version: &str) -> Package {
        pkg(
            PackageKind::Pypi,
            name,
            version,
            &format!("{SITE}/{name}-{version}.dist-info/METADATA"),
        )
    }

    fn conda(name: &str, version: &str) -> Package {
        pkg(
            PackageKind::Conda,
            name,
            version,
            &format!("opt/conda/conda-meta/{name}-{version}-0.json"),
        )
    }

    fn inv(packages: Vec<Package>) -> Inventory {
        Inventory {
            distro: None,
            packages,
        }
    }

    /// Diffs two one-package inventories: which list the change lands in.
    fn check(old: Package, new: Package, expect: &str) {
        let d = diff(&inv(vec![old.clone()]), &inv(vec![new.clone()]));
        let got = match (
            d.added.len(),
            d.removed.len(),
            d.upgraded.len(),
            d.downgraded.len(),
            d.changed.len(),
        ) {
            (0, 0, 0, 0, 0) => "same",
            (0, 0, 1, 0, 0) => "upgraded",
            (0, 0, 0, 1, 0) => "downgraded",
            (0, 0, 0, 0, 1) => "changed",
            (1, 1, 0, 0, 0) => "replaced",
            _ => "other",
        };
        assert_eq!(got, expect, "{old:?} -> {new:?}: {d:?}");
        assert_eq!(d.is_empty(), expect == "same");
    }

    #[test]
    fn versions_in_each_ecosystem_order() {
        use PackageKind::{Conda, Deb, Other, Pypi};
        let table = [
            (Deb, "1.0-1", "1.0-1+b1", "upgraded"),
            (Deb, "2.36-9+deb12u4", "2.36-9+deb12u10", "upgraded"),
            (Deb, "1:0.1", "2.0", "downgraded"),
            (Deb, "1.0", "1.0~rc1", "downgraded"),
            (Deb, "1.0", "1.0-0", "same"),
            (Deb, "1.0-1", "1.0-1", "same"),
            (Deb, "1.0-1", "abc", "changed"),
            (Pypi, "2.10", "2.11.3", "upgraded"),
            (Pypi, "1.9", "1.10", "upgraded"),
            (Pypi, "2.0", "2.0rc1", "downgraded"),
            (Pypi, "2.0", "2.0.post1", "upgraded"),
            (Pypi, "2.1.0+cu118", "2.1.0+cu121", "upgraded"),
            (Pypi, "2.0", "2.0.0", "same"),
            (Pypi, "2.0", "2.0-custom", "changed"),
            (Conda, "1.26.4", "2.0.0", "upgraded"),
            (Conda, "3.0.13", "3.0.2", "downgraded"),
            (Conda, "1.1.1w", "1.1.1k", "downgraded"),
            (Conda, "2023c", "2024a", "upgraded"),
            (Conda, "9e", "9f", "upgraded"),
            (Conda, "1.2_3", "1.2_10", "upgraded"),
            (Conda, "1_0", "1.0", "same"),
            (Other, "1.0.0-beta", "1.0.0-gamma", "upgraded"),
        ];
        for (kind, old, new, expect) in table {
            let (o, n) = match kind {
                Deb => (deb("p", old), deb("p", new)),
                Pypi => (pypi("p", old), pypi("p", new)),
                _ => (conda("p", old), conda("p", new)),
            };
            let (mut o, mut n) = (o, n);
            o.kind = kind;
            n.kind = kind;
            check(o, n, expect);
        }
    }

    #[test]
    fn packages_are_the_same_by_name_arch_and_environment() {
        // PEP 503 names: a respelled name is the same distribution.
        check(pypi("Jinja2", "2.10"), pypi("jinja2", "2.11"), "upgraded");
        check(
            pypi("typing_extensions", "4.0"),
            pypi("typing-extensions", "4.1"),
            "upgraded",
        );
        // Another site-packages is another environment.
        let mut elsewhere = pypi("numpy", "2.0");
        elsewhere.path = "usr/lib/python3/dist-packages/numpy-2.0.dist-info/METADATA".to_string();
        check(pypi("numpy", "1.26"), elsewhere, "replaced");
        // The version in the dist-info name does not make another environment.
        check(pypi("numpy", "1.26"), pypi("numpy", "2.0"), "upgraded");
        // egg-info files and folders.
        let egg = |v: &str| {
            pkg(
                PackageKind::Pypi,
                "six",
                v,
                &format!("{SITE}/six-{v}.egg-info"),
            )
        };
        check(egg("1.15"), egg("1.16"), "upgraded");
        // dpkg: another architecture is another package; names are exact.
        let mut i386 = deb("libc6", "2.36-9");
        i386.arch = "i386".to_string();
        check(deb("libc6", "2.36-9"), i386, "replaced");
        check(deb("libc6", "2.36-9"), deb("LIBC6", "2.36-9"), "replaced");
        // conda: another prefix is another environment.
        let mut env = conda("python", "3.12.1");
        env.path = "opt/conda/envs/ml/conda-meta/python-3.12.1-0.json".to_string();
        check(conda("python", "3.11.7"), env, "replaced");
        check(
            conda("python", "3.11.7"),
            conda("python", "3.12.1"),
            "upgraded",
        );
        // The same name in two kinds: two packages.
        check(pypi("jinja2", "2.10"), deb("jinja2", "2.11"), "replaced");
    }

    #[test]
    fn a_whole_diff_is_sorted() {
        let old = inv(vec![
            deb("zlib1g", "1:1.2.13.dfsg-1"),
            deb("bash", "5.2.15-2+b2"),
            deb("libssl3", "3.0.11-1~deb12u2"),
            pypi("requests", "2.31.0"),
            pypi("urllib3", "2.0.7"),
            pypi("jupyterlab", "4.1.0"),
            conda("numpy", "1.26.4"),
        ]);
        let new = inv(vec![
            deb("bash", "5.2.15-2+b7"),
            deb("libssl3", "3.0.11-1~deb12u2"),
            deb("curl", "7.88.1-10+deb12u5"),
            pypi("requests", "2.32.3"),
            pypi("jupyterlab", "4.0.9"),
            pypi("Flask", "3.0.0"),
            conda("numpy", "1.26.4"),
            conda("scipy", "1.11.4"),
        ]);
        let d = diff(&old, &new);
        let names = |ps: &[Package]| {
            ps.iter()
                .map(|p| format!("{}:{}@{}", p.kind, p.name, p.version))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&d.added),
            [
                "deb:curl@7.88.1-10+deb12u5",
                "pypi:Flask@3.0.0",
                "conda:scipy@1.11.4"
            ]
        );
        assert_eq!(
            names(&d.removed),
            ["deb:zlib1g@1:1.2.13.dfsg-1", "pypi:urllib3@2.0.7"]
        );
        let changes = |cs: &[Change]| {
            cs.iter()
                .map(|c| format!("{}:{} {} -> {}", c.kind, c.name, c.old, c.new))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            changes(&d.upgraded),
            [
                "deb:bash 5.2.15-2+b2 -> 5.2.15-2+b7",
                "pypi:requests 2.31.0 -> 2.32.3"
            ]
        );
        assert_eq!(changes(&d.downgraded), ["pypi:jupyterlab 4.1.0 -> 4.0.9"]);
        assert!(d.changed.is_empty());
        assert!(!d.is_empty());
        assert!(diff(&new, &new).is_empty());

        let json = serde_json::to_value(&d).expect("test input");
        assert_eq!(
            json["upgraded"][0],
            serde_json::json!({"kind": "deb", "name": "bash", "old": "5.2.15-2+b2", "new": "5.2.15-2+b7"})
        );
        assert_eq!(json["added"][1]["name"], "Flask");
    }

    #[test]
    fn duplicates_in_one_place_compare_as_sets() {
        let old = inv(vec![pypi("six", "1.15.0"), pypi("six", "1.16.0")]);
        let new = inv(vec![pypi("six", "1.16.0")]);
        let d = diff(&old, &new);
        assert_eq!(d.removed, vec![pypi("six", "1.15.0")]);
        assert!(d.added.is_empty() && d.upgraded.is_empty());
    }
}
