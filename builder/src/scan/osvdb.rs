//! Reads an OSV database folder for the built-in scanner: every `*.json`
//! file under it (the OSV bulk downloads unzipped per ecosystem, e.g.
//! `PyPI/`, `Debian/`, `Ubuntu/`), in sorted path order, read and parsed on
//! all CPUs and indexed by [`labforge_core::scan::osv::Database`].
//!
//! It fails closed: a missing or empty folder, an unreadable file or a file
//! that is not OSV JSON is an error naming the path, never a silently
//! smaller database. Hidden files and folders (`.git`, …) are skipped.
//!
//! This module only reads files. Matching is pure and lives in the core; it
//! never downloads a database itself.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use labforge_core::scan::osv::{self, Database, OsvError, Record};
use serde::Serialize;
use thiserror::Error;

/// How to get a database folder, for the errors that lack one.
pub const HOW_TO_GET: &str = "download each ecosystem's records from \
https://osv-vuln-data.storage.googleapis.com/<ecosystem>/all.zip (PyPI, Debian, Ubuntu) \
and unzip each into <folder>/<ecosystem>/";

/// Files parsed at once: bounds the memory that parsed, not yet indexed,
/// records take.
const CHUNK: usize = 512;

/// Most unreadable files named in one error.
const PROBLEMS_SHOWN: usize = 10;

#[derive(Debug, Error)]
pub enum OsvDbError {
    #[error("no OSV database folder at {path}; {HOW_TO_GET}")]
    Missing { path: PathBuf },
    #[error("cannot read {path} in the OSV database folder: {source}")]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no OSV records (*.json files) under {path}; {HOW_TO_GET}")]
    Empty { path: PathBuf },
    #[error(
        "{count} of the OSV files under {path} cannot be read ({problems}); the folder is damaged: \
         download it again ({HOW_TO_GET})",
        count = problems.len(),
        problems = shown(problems)
    )]
    Corrupt {
        path: PathBuf,
        problems: Vec<String>,
    },
}

fn shown(problems: &[String]) -> String {
    let mut text = problems
        .iter()
        .take(PROBLEMS_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > PROBLEMS_SHOWN {
        text.push_str(&format!("; and {} more", problems.len() - PROBLEMS_SHOWN));
    }
    text
}

/// What a load read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LoadStats {
    /// `*.json` files read.
    pub files: usize,
    /// Records in them, withdrawn ones included.
    pub records: usize,
    /// Withdrawn records (ignored by the matcher).
    pub withdrawn: usize,
}

/// Loads every `*.json` file under `dir` (recursively) into a database.
pub fn load(dir: &Path) -> Result<(Database, LoadStats), OsvDbError> {
    if !dir.is_dir() {
        return Err(OsvDbError::Missing {
            path: dir.to_path_buf(),
        });
    }
    let mut files = Vec::new();
    let mut visited = HashSet::new();
    collect(dir, &mut files, &mut visited)?;
    if files.is_empty() {
        return Err(OsvDbError::Empty {
            path: dir.to_path_buf(),
        });
    }
    files.sort();

    let mut db = Database::new();
    let mut stats = LoadStats {
        files: files.len(),
        ..LoadStats::default()
    };
    let mut problems = Vec::new();
    for chunk in files.chunks(CHUNK) {
        for parsed in read_all(chunk) {
            match parsed {
                Ok(records) if problems.is_empty() => {
                    stats.records += records.len();
                    for record in records {
                        db.add(record);
                    }
                }
                Ok(_) => {}
                Err(problem) => problems.push(problem),
            }
        }
    }
    if !problems.is_empty() {
        return Err(OsvDbError::Corrupt {
            path: dir.to_path_buf(),
            problems,
        });
    }
    stats.withdrawn = db.withdrawn();
    Ok((db, stats))
}

/// Reads and parses the files on every CPU we may use, results in input order.
fn read_all(paths: &[PathBuf]) -> Vec<Result<Vec<Record>, String>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = paths.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .chunks(per_thread)
            .map(|part| scope.spawn(move || part.iter().map(|p| read(p)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .zip(paths.chunks(per_thread))
            .flat_map(|(handle, part)| {
                handle.join().unwrap_or_else(|_| {
                    part.iter()
                        .map(|p| {
                            Err(format!(
                                "{}: internal error: its reader thread panicked",
                                p.display()
                            ))
                        })
                        .collect()
                })
            })
            .collect()
    })
}

/// One file's records, or what is wrong with it (naming the file).
fn read(path: &Path) -> Result<Vec<Record>, String> {
    let origin = path.display().to_string();
    let bytes = fs::read(path).map_err(|e| format!("{origin}: {e}"))?;
    osv::parse_json(&bytes, &origin).map_err(|e| match e {
        OsvError::Json { origin, source } => format!("{origin}: {source}"),
    })
}

/// Every non-hidden `*.json` file under `dir`, following symbolic links but
/// entering each real folder once.
fn collect(
    dir: &Path,
    files: &mut Vec<PathBuf>,
    visited: &mut HashSet<PathBuf>,
) -> Result<(), OsvDbError> {
    let list_error = |source| OsvDbError::List {
        path: dir.to_path_buf(),
        source,
    };
    let real = fs::canonicalize(dir).map_err(list_error)?;
    if !visited.insert(real) {
        return Ok(());
    }
    for entry in fs::read_dir(dir).map_err(list_error)? {
        let entry = entry.map_err(list_error)?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let stat_error = |source| OsvDbError::List {
            path: path.clone(),
            source,
        };
        let mut file_type = entry.file_type().map_err(stat_error)?;
        if file_type.is_symlink() {
            // Follows links; a dangling one is a broken database.
            file_type = fs::metadata(&path).map_err(stat_error)?.file_type();
        }
        if file_type.is_dir() {
            collect(&path, files, visited)?;
        } else if file_type.is_file()
            && path
                .extension()
                .is_some_and(|ext| ext.eq_ignore_ascii_case("json"))
        {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use labforge_core::scan::{Inventory, Package, PackageKind};

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/osv")
    }

    fn jinja2(version: &str) -> Inventory {
        Inventory {
            distro: None,
            packages: vec![Package {
                kind: PackageKind::Pypi,
                name: "Jinja2".to_string(),
                version: version.to_string(),
                source: None,
                arch: String::new(),
                license: None,
                path: format!("usr/lib/python3/dist-packages/Jinja2-{version}.dist-info/METADATA"),
            }],
        }
    }

    #[test]
    fn loads_the_fixture_folder() {
        let (db, stats) = load(&fixtures()).expect("test input");
        let json_files = fs::read_dir(fixtures().join("PyPI"))
            .expect("test input")
            .count();
        assert_eq!(
            stats,
            LoadStats {
                files: json_files,
                records: json_files,
                withdrawn: 1
            }
        );
        assert_eq!(db.len(), json_files - 1);
        let ids: Vec<String> = db
            .scan(&jinja2("2.10"))
            .findings
            .into_iter()
            .map(|f| f.id)
            .collect();
        assert_eq!(ids, ["PYSEC-2019-217", "PYSEC-2021-66"]);
        assert!(db.scan(&jinja2("2.11.3")).findings.is_empty());
    }

    #[test]
    fn a_corrupt_record_fails_the_load() {
        let tmp = tempfile::tempdir().expect("test input");
        let pypi = tmp.path().join("PyPI");
        fs::create_dir(&pypi).expect("test input");
        fs::copy(
            fixtures().join("PyPI/PYSEC-2021-66.json"),
            pypi.join("PYSEC-2021-66.json"),
        )
        .expect("test input");
        fs::write(
            pypi.join("PYSEC-2099-1.json"),
            b"{\"id\": \"PYSEC-2099-1\", \"affected\": [",
        )
        .expect("test input");
        fs::write(pypi.join("PYSEC-2099-2.json"), b"{\"summary\": \"no id\"}").expect("test input");
        let err = load(tmp.path()).expect_err("must fail").to_string();
        assert!(err.starts_with("2 of the OSV files under "), "{err}");
        assert!(
            err.contains(&format!(
                "{}: EOF while parsing",
                pypi.join("PYSEC-2099-1.json").display()
            )),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "{}: missing field `id`",
                pypi.join("PYSEC-2099-2.json").display()
            )),
            "{err}"
        );
        assert!(err.contains("download it again"), "{err}");
    }

    #[test]
    fn a_missing_or_empty_folder_says_how_to_get_one() {
        let tmp = tempfile::tempdir().expect("test input");
        let missing = tmp.path().join("nope");
        let err = load(&missing).expect_err("must fail").to_string();
        assert!(
            err.starts_with(&format!("no OSV database folder at {}", missing.display())),
            "{err}"
        );
        assert!(
            err.contains("https://osv-vuln-data.storage.googleapis.com/<ecosystem>/all.zip"),
            "{err}"
        );

        // Only hidden and non-JSON files: still empty.
        fs::create_dir_all(tmp.path().join("PyPI/.git")).expect("test input");
        fs::write(tmp.path().join("PyPI/.git/broken.json"), b"not json").expect("test input");
        fs::write(tmp.path().join("PyPI/README.md"), b"# readme").expect("test input");
        fs::write(tmp.path().join(".hidden.json"), b"not json").expect("test input");
        let err = load(tmp.path()).expect_err("must fail").to_string();
        assert!(
            err.starts_with("no OSV records (*.json files) under"),
            "{err}"
        );
        assert!(err.contains("all.zip"), "{err}");

        // A file is not a folder.
        let err = load(&tmp.path().join("PyPI/README.md"))
            .expect_err("must fail")
            .to_string();
        assert!(err.starts_with("no OSV database folder at"), "{err}");
    }

    #[test]
    fn nested_folders_and_links_are_read_once() {
        let tmp = tempfile::tempdir().expect("test input");
        let deep = tmp.path().join("PyPI/a/b");
        fs::create_dir_all(&deep).expect("test input");
        fs::copy(
            fixtures().join("PyPI/PYSEC-2021-66.json"),
            deep.join("PYSEC-2021-66.json"),
        )
        .expect("test input");
        fs::copy(
            fixtures().join("PyPI/PYSEC-2019-144.json"),
            tmp.path().join("PyPI/PYSEC-2019-144.JSON"),
        )
        .expect("test input");
        // A link back up must not loop.
        std::os::unix::fs::symlink(tmp.path().join("PyPI"), deep.join("loop")).expect("test input");
        let (db, stats) = load(tmp.path()).expect("test input");
        assert_eq!(
            stats,
            LoadStats {
                files: 2,
                records: 2,
                withdrawn: 1
            }
        );
        assert_eq!(db.len(), 1);
        assert_eq!(db.scan(&jinja2("2.11.2")).findings.len(), 1);

        // A dangling link is a broken database, not a smaller one.
        std::os::unix::fs::symlink(tmp.path().join("gone.json"), tmp.path().join("PyPI/x.json"))
            .expect("test input");
        let err = load(tmp.path()).expect_err("must fail").to_string();
        assert!(
            err.starts_with(&format!(
                "cannot read {} in the OSV database folder: ",
                tmp.path().join("PyPI/x.json").display()
            )),
            "{err}"
        );
    }
}
