//! Reading a project from disk: the catalog files and the Dockerfile
//! templates. This is the file-system edge in front of the pure core.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use labforge_core::catalog::{SourceFile, Sources};
use labforge_core::render::TemplateSet;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not UTF-8 text")]
    NotText { path: PathBuf },
    #[error("{path} does not exist; {hint}")]
    Missing { path: PathBuf, hint: &'static str },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LoadError + '_ {
    move |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the catalog and templates live.
#[derive(Debug, Clone)]
pub struct Layout {
    pub catalog: PathBuf,
    pub dockerfiles: PathBuf,
}

impl Layout {
    /// Read `catalog/catalog.yaml` and `catalog/images/*.yaml` (sorted by name).
    /// Files are reported with paths as the user gave them.
    pub fn read_catalog(&self) -> Result<Sources, LoadError> {
        let settings_path = self.catalog.join("catalog.yaml");
        if !settings_path.exists() {
            return Err(LoadError::Missing {
                path: settings_path,
                hint: "point --catalog at the folder that holds catalog.yaml and images/",
            });
        }
        let settings = read_text(&settings_path)?;
        let images_dir = self.catalog.join("images");
        let mut images = Vec::new();
        if images_dir.exists() {
            let mut paths: Vec<PathBuf> = fs::read_dir(&images_dir)
                .map_err(io(&images_dir))?
                .map(|e| e.map(|e| e.path()).map_err(io(&images_dir)))
                .collect::<Result<_, _>>()?;
            // Regular files only: a symbolic link could pull in a file from
            // outside the catalog.
            paths.retain(|p| {
                fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file())
                    && p.extension().is_some_and(|e| e == "yaml" || e == "yml")
            });
            paths.sort();
            for p in paths {
                images.push(read_text(&p)?);
            }
        }
        Ok(Sources { settings, images })
    }

    /// Read every template (`*.tera` outside `files/`) and every static file
    /// under `files/`.
    pub fn read_templates(&self) -> Result<TemplateSet, LoadError> {
        if !self.dockerfiles.is_dir() {
            return Err(LoadError::Missing {
                path: self.dockerfiles.clone(),
                hint: "point --dockerfiles at the folder of Dockerfile templates",
            });
        }
        let mut set = TemplateSet::default();
        let mut all = BTreeMap::new();
        walk(&self.dockerfiles, &self.dockerfiles, &mut all)?;
        for (rel, path) in all {
            if let Some(file) = rel.strip_prefix("files/") {
                let bytes = fs::read(&path).map_err(io(&path))?;
                set.files.insert(file.to_string(), bytes);
            } else if rel.ends_with(".tera") {
                set.templates.insert(rel, read_text(&path)?.text);
            }
        }
        Ok(set)
    }
}

fn read_text(path: &Path) -> Result<SourceFile, LoadError> {
    let bytes = fs::read(path).map_err(io(path))?;
    let text = String::from_utf8(bytes).map_err(|_| LoadError::NotText {
        path: path.to_path_buf(),
    })?;
    Ok(SourceFile {
        path: path.display().to_string(),
        text,
    })
}

/// Files below `dir`, by `/`-separated path relative to `root`. Hidden files
/// and symbolic links are skipped, so nothing outside the tree gets in.
fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> Result<(), LoadError> {
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let kind = entry.file_type().map_err(io(&path))?;
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_file() {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            out.insert(rel, path);
        }
    }
    Ok(())
}
