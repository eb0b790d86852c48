//! Writing rendered build contexts to disk, all or nothing.
//!
//! Everything is written into a fresh sibling folder first and swapped into
//! place with renames at the end, so a failure leaves the previous output (or
//! nothing) in place, never half of a new one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use labforge_core::Analyzed;
use labforge_core::plan::content_tag;

/// Marks a folder as labforge's output, so that replacing it is safe.
pub const MARKER: &str = ".labforge-render";

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} exists and was not written by labforge render; choose an empty or new folder, or remove it first"
    )]
    Foreign { path: PathBuf },
    #[error("unknown image {name:?}; `labforge validate --list` shows the image names")]
    UnknownImage { name: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `render` wrote for one image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Written {
    pub name: String,
    pub dir: PathBuf,
    pub identity: String,
    pub tag: String,
    pub files: usize,
}

/// Write `<out>/<image>/Dockerfile` plus its context files for the selected
/// images (all when `only` is empty), and `<out>/index.json`.
pub fn render_to(
    analyzed: &Analyzed,
    out: &Path,
    only: &[String],
) -> Result<Vec<Written>, OutputError> {
    for name in only {
        if analyzed.catalog.image(name).is_none() {
            return Err(OutputError::UnknownImage { name: name.clone() });
        }
    }
    if out.exists() {
        let empty = fs::read_dir(out).map_err(io(out))?.next().is_none();
        if !empty && !out.join(MARKER).exists() {
            return Err(OutputError::Foreign {
                path: out.to_path_buf(),
            });
        }
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io(&parent))?;
    let base = out
        .file_name()
        .map_or_else(|| "render".into(), |n| n.to_string_lossy().into_owned());
    let stamp = unique_stamp();
    let staging = parent.join(format!(".{base}.tmp-{stamp}"));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    let result = write_all(analyzed, &staging, only);
    let written = match result {
        Ok(w) => w,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    // Swap: old aside, new in, old removed.
    let old = parent.join(format!(".{base}.old-{stamp}"));
    if old.exists() {
        fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    if out.exists() {
        fs::rename(out, &old).map_err(io(out))?;
    }
    if let Err(e) = fs::rename(&staging, out) {
        if old.exists() {
            let _ = fs::rename(&old, out);
        }
        let _ = fs::remove_dir_all(&staging);
        return Err(OutputError::Io {
            path: out.to_path_buf(),
            source: e,
        });
    }
    if old.exists() {
        fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(written
        .into_iter()
        .map(|mut w| {
            w.dir = out.join(&w.name);
            w
        })
        .collect())
}

/// Process id and time, so that a leftover from a killed run never collides.
fn unique_stamp() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    Ok(())
}

fn write_all(
    analyzed: &Analyzed,
    staging: &Path,
    only: &[String],
) -> Result<Vec<Written>, OutputError> {
    fs::create_dir_all(staging).map_err(io(staging))?;
    let mut written = Vec::new();
    let mut index = Vec::new();
    for i in analyzed.graph.order() {
        let image = &analyzed.catalog.images[i];
        if !only.is_empty() && !only.contains(&image.name) {
            continue;
        }
        let prepared = &analyzed.prepared[i];
        let dir = staging.join(&image.name);
        write_file(
            &dir.join("Dockerfile"),
            prepared.rendered.dockerfile.as_bytes(),
        )?;
        for (path, bytes) in &prepared.rendered.context {
            write_file(&dir.join(path), bytes)?;
        }
        let tag = content_tag(&image.variant, &prepared.inputs);
        index.push(serde_json::json!({
            "name": image.name,
            "dir": image.name,
            "level": analyzed.graph.level[i],
            "tag": tag,
            "base_image": prepared.rendered.base_reference,
            // What the builder adds at build time: the parent's digest as
            // BASE_IMAGE, and labels that cannot be part of the hashed bytes.
            "build_labels": labforge_core::render::build_labels(&analyzed.catalog, image, &prepared.inputs.identity),
            "inputs": prepared.inputs,
        }));
        written.push(Written {
            name: image.name.clone(),
            dir,
            identity: prepared.inputs.identity.clone(),
            tag,
            files: prepared.rendered.context.len() + 1,
        });
    }
    let json =
        serde_json::to_vec_pretty(&serde_json::json!({ "images": index })).unwrap_or_default();
    write_file(&staging.join("index.json"), &json)?;
    write_file(
        &staging.join(MARKER),
        b"written by labforge render; replaced as a whole\n",
    )?;
    Ok(written)
}
