//! The catalog: settings (`catalog.yaml`) and one file per image, decoded,
//! expanded into concrete images (variants) and cross-checked.
//!
//! Pure: the caller reads the files and hands their text in [`Sources`].

mod decode;
mod model;

use std::collections::{BTreeMap, BTreeSet};

pub use decode::MAX_PACKAGES;
pub use model::*;

use crate::formats;
use crate::graph;
use crate::yaml::{self, Diagnostic, Pos, Reader, Spanned};
use decode::{Fields, ImageFile};

/// Decode, expand and check a catalog. Every problem is reported, sorted by
/// file and position; `Err` is never empty.
pub fn load(sources: &Sources) -> Result<Catalog, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let settings = {
        let file = &sources.settings;
        match yaml::parse(&file.path, &file.text) {
            Ok(root) => decode::settings(&mut Reader::new(&file.path, &mut diags), &root),
            Err(d) => {
                diags.push(d);
                None
            }
        }
    };
    let mut files = Vec::new();
    let parsed = crate::par::map(&sources.images, |file| yaml::parse(&file.path, &file.text));
    for (file, root) in sources.images.iter().zip(parsed) {
        let root = match root {
            Ok(root) => root,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        let mut r = Reader::new(&file.path, &mut diags);
        if let Some(f) = decode::image_file(&mut r, &root) {
            let stem = file_stem(&file.path);
            if stem != f.name.value {
                r.error(
                    f.name.pos,
                    "name",
                    format!(
                        "{:?} does not match the file name {stem:?}: one file per image, named <name>.yaml",
                        f.name.value
                    ),
                );
            }
            files.push(f);
        }
    }
    let Some(settings) = settings else {
        return Err(sorted(diags));
    };
    let mut images = Vec::new();
    for f in &files {
        let mut r = Reader::new(&f.file, &mut diags);
        images.extend(expand(&mut r, f, &settings));
    }
    let catalog = Catalog::new(settings, images);
    check(&catalog, &mut diags);
    if diags.is_empty() {
        Ok(catalog)
    } else {
        Err(sorted(diags))
    }
}

fn sorted(mut diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diags.sort();
    diags.dedup();
    diags
}

fn file_stem(path: &str) -> &str {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.strip_suffix(".yaml")
        .or_else(|| name.strip_suffix(".yml"))
        .unwrap_or(name)
}

/// The combinations of a matrix, in axis order, minus the excluded ones.
fn combinations(r: &mut Reader<'_>, f: &ImageFile) -> Vec<Vec<usize>> {
    for ex in &f.exclude {
        for (axis, value) in &ex.value {
            match f.matrix.iter().find(|a| &a.name.value == axis) {
                None => r.error(ex.pos, "exclude", format!("unknown axis {axis:?}")),
                Some(a) if !a.values.iter().any(|v| &v.name.value == value) => r.error(
                    ex.pos,
                    "exclude",
                    format!("axis {axis:?} has no value {value:?}"),
                ),
                Some(_) => {}
            }
        }
    }
    let mut combos: Vec<Vec<usize>> = vec![Vec::new()];
    for axis in &f.matrix {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                (0..axis.values.len()).map(move |i| {
                    let mut next = c.clone();
                    next.push(i);
                    next
                })
            })
            .collect();
    }
    combos.retain(|combo| {
        !f.exclude.iter().any(|ex| {
            ex.value.iter().all(|(axis, value)| {
                f.matrix
                    .iter()
                    .zip(combo)
                    .any(|(a, &i)| &a.name.value == axis && &a.values[i].name.value == value)
            })
        })
    });
    combos
}

fn expand(r: &mut Reader<'_>, f: &ImageFile, settings: &Settings) -> Vec<Image> {
    let combos = combinations(r, f);
    if combos.is_empty() {
        r.error(f.pos, "exclude", "every variant is excluded");
        return Vec::new();
    }
    let variant_of = |combo: &[usize]| -> String {
        if f.matrix.is_empty() {
            "main".to_string()
        } else {
            f.matrix
                .iter()
                .zip(combo)
                .map(|(a, &i)| a.values[i].name.value.as_str())
                .collect::<Vec<_>>()
                .join("-")
        }
    };
    let default_variant = match &f.default_variant {
        Some(d) => {
            if !combos.iter().any(|c| variant_of(c) == d.value) {
                let all: Vec<String> = combos.iter().map(|c| variant_of(c)).collect();
                r.error(
                    d.pos,
                    "default_variant",
                    format!(
                        "{:?} is not a variant of this image (variants: {})",
                        d.value,
                        all.join(", ")
                    ),
                );
            }
            d.value.clone()
        }
        None => variant_of(&combos[0]),
    };
    let mut out = Vec::new();
    for combo in &combos {
        let variant = variant_of(combo);
        let name = if f.matrix.is_empty() {
            f.name.value.clone()
        } else {
            format!("{}-{variant}", f.name.value)
        };
        if name.len() > 63 {
            r.error(
                f.name.pos,
                "name",
                format!("the variant name {name:?} is longer than 63 characters; shorten the name or the variant values"),
            );
            continue;
        }
        let layers: Vec<&Fields> = std::iter::once(&f.body)
            .chain(
                f.matrix
                    .iter()
                    .zip(combo)
                    .map(|(a, &i)| &a.values[i].fields),
            )
            .collect();
        if let Some(image) = merge(
            r,
            f,
            settings,
            &layers,
            combo,
            name,
            variant.clone(),
            variant == default_variant,
        ) {
            out.push(image);
        }
    }
    out
}

/// The name a package list entry is known by (to find duplicates), and the
/// line written for it (pip requirements normalised).
fn package_key_and_line(kind: &str, spec: &str) -> (String, String) {
    if kind == "pip"
        && let Ok(req) = formats::parse_requirement(spec)
    {
        return (req.name.clone(), req.to_line());
    }
    let name = spec
        .split(['=', '<', '>', '!', '@'])
        .next()
        .unwrap_or(spec)
        .to_string();
    (name, spec.to_string())
}

fn merge_list(
    r: &mut Reader<'_>,
    kind: &str,
    path: &str,
    layers: &[&Fields],
    get: fn(&Fields) -> &Vec<Spanned<String>>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen: BTreeMap<String, (String, Pos)> = BTreeMap::new();
    for layer in layers {
        for item in get(layer) {
            let (key, line) = package_key_and_line(kind, &item.value);
            match seen.get(&key) {
                Some((prev, _)) if *prev == line => {}
                Some((prev, at)) => r.error(
                    item.pos,
                    path,
                    format!(
                        "{:?} conflicts with {prev:?} (line {}): list each package once",
                        item.value, at.line
                    ),
                ),
                None => {
                    seen.insert(key, (line.clone(), item.pos));
                    out.push(line);
                }
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn merge(
    r: &mut Reader<'_>,
    f: &ImageFile,
    settings: &Settings,
    layers: &[&Fields],
    combo: &[usize],
    name: String,
    variant: String,
    is_default: bool,
) -> Option<Image> {
    let parent = layers.iter().rev().find_map(|l| l.parent.clone());
    let Some(parent) = parent else {
        if layers.iter().any(|l| l.parent_given) {
            return None; // the invalid value was reported where it was written
        }
        r.error(
            f.pos,
            "",
            format!("{name}: missing base or parent (give one in the image, or in a variant value of every combination)"),
        );
        return None;
    };
    let packages = Packages {
        apt: merge_list(r, "apt", "packages.apt", layers, |l| &l.apt),
        pip: merge_list(r, "pip", "packages.pip", layers, |l| &l.pip),
        conda: merge_list(r, "conda", "packages.conda", layers, |l| &l.conda),
    };
    let vscode_extensions = merge_list(r, "vscode", "vscode.extensions", layers, |l| &l.vscode);
    let mut env = BTreeMap::new();
    let mut labels = BTreeMap::new();
    let mut build_args = BTreeMap::new();
    let mut tests: Vec<SmokeTest> = Vec::new();
    let mut p = ProfileFields::default();
    let mut description = None;
    for l in layers {
        env.extend(l.env.clone());
        labels.extend(l.labels.clone());
        build_args.extend(l.build_args.clone());
        if l.description.is_some() {
            description.clone_from(&l.description);
        }
        for t in &l.tests {
            if tests.iter().any(|x| x.name == t.value.name) {
                r.error(
                    t.pos,
                    "tests",
                    format!("{name}: a test named {:?} already exists", t.value.name),
                );
            } else {
                tests.push(t.value.clone());
            }
        }
        let lp = &l.profile;
        macro_rules! over {
            ($($field:ident),*) => {$(if lp.$field.is_some() { p.$field.clone_from(&lp.$field); })*};
        }
        over!(
            display_name,
            description,
            slug,
            default,
            default_pos,
            gpus,
            gpus_pos,
            cpu_limit,
            cpu_guarantee,
            mem_limit,
            mem_guarantee,
            tolerations,
            groups
        );
        p.node_selector.extend(lp.node_selector.clone());
    }
    let d = &settings.default_profile;
    let axis_named = layers[1..].iter().any(|l| l.profile.display_name.is_some());
    let mut display_name = p
        .display_name
        .clone()
        .unwrap_or_else(|| f.name.value.clone());
    if !f.matrix.is_empty() && !axis_named {
        let labels: Vec<String> = f
            .matrix
            .iter()
            .zip(combo)
            .map(|(a, &i)| {
                let v = &a.values[i];
                v.fields
                    .label
                    .clone()
                    .unwrap_or_else(|| v.name.value.clone())
            })
            .collect();
        display_name = format!("{display_name} · {}", labels.join(" · "));
    }
    let description = description.unwrap_or_default();
    let gpus = p.gpus.clone().filter(|g| g.max() > 0);
    // Placement: the hub-wide defaults, plus the GPU pool for GPU images, plus
    // the image's own (its tolerations replace the defaults' list).
    let mut node_selector = d.node_selector.clone();
    let mut tolerations = p
        .tolerations
        .clone()
        .or_else(|| d.tolerations.clone())
        .unwrap_or_default();
    if gpus.is_some() {
        node_selector.extend(settings.gpu_pool.node_selector.clone());
        tolerations.extend(settings.gpu_pool.tolerations.clone());
    }
    node_selector.extend(p.node_selector.clone());
    // `default: true` on the image means its default variant; on a variant
    // value it must be that variant.
    let variant_says_default = layers[1..].iter().any(|l| l.profile.default == Some(true));
    if variant_says_default && !is_default {
        r.error(
            f.pos,
            "profile.default",
            format!(
                "{name}: only the default variant's profile can be the default; set default_variant to choose it"
            ),
        );
    }
    let profile = Profile {
        slug: p
            .slug
            .as_ref()
            .map_or_else(|| name.clone(), |s| s.value.clone()),
        display_name,
        description: p.description.clone().unwrap_or_else(|| description.clone()),
        default: is_default && p.default.unwrap_or(false),
        gpus,
        cpu_limit: p.cpu_limit.or(d.cpu_limit),
        cpu_guarantee: p.cpu_guarantee.or(d.cpu_guarantee),
        mem_limit: p.mem_limit.clone().or_else(|| d.mem_limit.clone()),
        mem_guarantee: p.mem_guarantee.clone().or_else(|| d.mem_guarantee.clone()),
        node_selector,
        tolerations,
        groups: p
            .groups
            .clone()
            .or_else(|| d.groups.clone())
            .unwrap_or_default(),
    };
    if let (Some(limit), Some(guarantee)) = (profile.cpu_limit, profile.cpu_guarantee)
        && guarantee > limit
    {
        r.error(
            f.pos,
            "profile.cpu",
            format!("{name}: the CPU guarantee {guarantee} is above the limit {limit} (with defaults applied); Kubernetes rejects such a pod"),
        );
    }
    if let (Some(limit), Some(guarantee)) = (&profile.mem_limit, &profile.mem_guarantee)
        && let (Some(l), Some(g)) = (limit.bytes(), guarantee.bytes())
        && g > l
    {
        r.error(
            f.pos,
            "profile.memory",
            format!("{name}: the memory guarantee is above the limit (with defaults applied); Kubernetes rejects such a pod"),
        );
    }
    Some(Image {
        name,
        repository: f.name.value.clone(),
        variant,
        axes: f
            .matrix
            .iter()
            .zip(combo)
            .map(|(a, &i)| (a.name.value.clone(), a.values[i].name.value.clone()))
            .collect(),
        default_variant: is_default,
        file: f.file.clone(),
        pos: f.name.pos,
        description,
        template: f.template.value.clone(),
        template_pos: f.template.pos,
        slug_pos: p.slug.as_ref().map_or(f.name.pos, |s| s.pos),
        gpus_pos: p.gpus_pos.unwrap_or(f.name.pos),
        default_pos: p.default_pos.unwrap_or(f.name.pos),
        parent: parent.value,
        parent_pos: parent.pos,
        packages,
        vscode_extensions,
        env,
        labels,
        build_args,
        tests,
        profile,
        owners: f.owners.clone(),
        issue: f.issue,
        server_test: f.server_test,
        scan: settings.scan.with(&f.scan),
    })
}

/// Checks across images: names, slugs, references, cycles, defaults, GPUs.
fn check(catalog: &Catalog, diags: &mut Vec<Diagnostic>) {
    let err =
        |diags: &mut Vec<Diagnostic>, image: &Image, pos: Pos, path: &str, message: String| {
            diags.push(Diagnostic {
                file: image.file.clone(),
                line: pos.line,
                col: pos.col,
                path: path.to_string(),
                message,
            });
        };
    let mut names: BTreeMap<&str, &Image> = BTreeMap::new();
    let mut slugs: BTreeMap<&str, &Image> = BTreeMap::new();
    let mut defaults: Vec<&Image> = Vec::new();
    for image in &catalog.images {
        if let Some(prev) = names.insert(&image.name, image) {
            err(
                diags,
                image,
                image.pos,
                "name",
                format!(
                    "the image name {:?} is already used by {}:{}; image names must be unique",
                    image.name, prev.file, prev.pos.line
                ),
            );
            continue;
        }
        if let Some(prev) = slugs.insert(&image.profile.slug, image) {
            err(
                diags,
                image,
                image.slug_pos,
                "profile.slug",
                format!(
                    "{}: the profile slug {:?} is already used by {}; slugs must be unique (KubeSpawner silently picks the first)",
                    image.name, image.profile.slug, prev.name
                ),
            );
        }

        if image.profile.default {
            defaults.push(image);
        }
    }
    if defaults.len() > 1 {
        for image in &defaults {
            let others: Vec<&str> = defaults
                .iter()
                .filter(|d| d.name != image.name)
                .map(|d| d.name.as_str())
                .collect();
            err(
                diags,
                image,
                image.default_pos,
                "profile.default",
                format!(
                    "{}: only one profile may be the default (also default: {})",
                    image.name,
                    others.join(", ")
                ),
            );
        }
    }
    let path_of = |p: &ParentRef| match p {
        ParentRef::Base(_) => "base",
        ParentRef::Image(_) => "parent",
    };
    let mut broken: BTreeSet<&str> = BTreeSet::new();
    for image in &catalog.images {
        match &image.parent {
            ParentRef::Base(b) if !catalog.settings.bases.contains_key(b) => {
                let known: Vec<&str> = catalog.settings.bases.keys().map(String::as_str).collect();
                err(
                    diags,
                    image,
                    image.parent_pos,
                    "base",
                    format!(
                        "{}: unknown base {b:?} (bases in catalog.yaml: {})",
                        image.name,
                        known.join(", ")
                    ),
                );
                broken.insert(&image.name);
            }
            ParentRef::Image(p) if !names.contains_key(p.as_str()) => {
                let near: Vec<&str> = names
                    .keys()
                    .filter(|n| n.starts_with(p.split('-').next().unwrap_or(p)))
                    .copied()
                    .take(6)
                    .collect();
                let hint = if near.is_empty() {
                    String::new()
                } else {
                    format!(" (images with a similar name: {})", near.join(", "))
                };
                err(
                    diags,
                    image,
                    image.parent_pos,
                    path_of(&image.parent),
                    format!("{}: unknown parent image {p:?}{hint}", image.name),
                );
                broken.insert(&image.name);
            }
            _ => {}
        }
    }
    let cycles = graph::cycles(catalog);
    for cycle in &cycles {
        if let Some(image) = catalog.image(&cycle[0]) {
            err(
                diags,
                image,
                image.parent_pos,
                "parent",
                format!(
                    "{}: parent cycle {} -> {}",
                    image.name,
                    cycle.join(" -> "),
                    cycle[0]
                ),
            );
        }
    }
    let in_cycle: BTreeSet<&str> = cycles.iter().flatten().map(String::as_str).collect();
    broken.extend(in_cycle);
    for image in &catalog.images {
        // An image whose chain is broken was reported above.
        if broken.contains(image.name.as_str()) {
            continue;
        }
        let Some(root) = catalog.root_base(image) else {
            continue;
        };
        if root.cuda.is_none() {
            if image.profile.gpus.is_some() {
                err(
                    diags,
                    image,
                    image.gpus_pos,
                    "profile.gpus",
                    format!(
                        "{}: requests GPUs but is not built on a CUDA base; use a CUDA variant or drop gpus",
                        image.name
                    ),
                );
            }
            if let Some(t) = image.tests.iter().find(|t| t.gpu) {
                err(
                    diags,
                    image,
                    t.pos,
                    "tests",
                    format!(
                        "{}: the GPU test {:?} cannot run on an image without CUDA",
                        image.name, t.name
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
