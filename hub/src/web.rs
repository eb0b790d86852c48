//! The web catalog: server-rendered HTML pages (Tera) for the people who
//! choose an environment. No JavaScript is needed; the templates and the
//! stylesheet are compiled into the binary.
//!
//! Pure rendering: handlers hand in the snapshot's documents. This module
//! does no I/O, knows nothing about the HTTP server, the snapshot loader or
//! the JSON API, and never changes the documents it is given.
//!
//! Escaping: every template is named `*.html`, so Tera escapes every value
//! it prints (`& < > " '`). URLs that come from the catalog also pass the
//! `safe_url` filter, which drops anything but `http(s)://` and
//! site-relative links.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use tera::{Context, Tera, Value};

use crate::doc::{CatalogDoc, ImageDoc, PackageDoc, Unavailable, VersionDoc};

/// The stylesheet served at `/static/style.css`.
pub const STYLE_CSS: &str = include_str!("../static/style.css");

/// Where the pages link the stylesheet; the server serves [`STYLE_CSS`] here.
pub const STYLE_PATH: &str = "/static/style.css";

/// The templates, compiled in. Names end in `.html` so Tera autoescapes them.
const TEMPLATES: [(&str, &str); 5] = [
    ("base.html", include_str!("../templates/base.html")),
    ("macros.html", include_str!("../templates/macros.html")),
    ("index.html", include_str!("../templates/index.html")),
    ("image.html", include_str!("../templates/image.html")),
    ("error.html", include_str!("../templates/error.html")),
];

/// Shown when [`Site::title`] is empty.
const DEFAULT_TITLE: &str = "Environments";

/// A package kind's `<details>` starts open when it has at most this many rows.
const OPEN_GROUP_MAX: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("template {template}: {message}")]
    Template { template: String, message: String },
}

impl WebError {
    fn template(template: &str, err: &tera::Error) -> WebError {
        // Tera nests the useful part (which variable, which filter) in the
        // source chain: keep all of it.
        let mut message = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(inner) = source {
            message.push_str(": ");
            message.push_str(&inner.to_string());
            source = inner.source();
        }
        WebError::Template {
            template: template.to_string(),
            message,
        }
    }
}

/// Site-wide values every page shows.
#[derive(Debug, Clone, Default)]
pub struct Site {
    /// Shown in the header and the page titles, e.g. "KI-Cluster environments".
    pub title: String,
    /// The catalog repository (`source` in catalog.yaml), linked in the footer.
    pub source: Option<String>,
}

/// The index page's search and filters (`GET /?q=&gpu=&cuda=&framework=&course=`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filters {
    /// Free text, matched case-insensitively against name, display name,
    /// description, frameworks and declared packages.
    pub q: Option<String>,
    /// `gpu` or `cpu`.
    pub gpu: Option<String>,
    /// A CUDA version prefix, e.g. `12.4`.
    pub cuda: Option<String>,
    pub framework: Option<String>,
    /// A group (course) name.
    pub course: Option<String>,
}

/// A filter value, trimmed; `None` when absent or blank.
fn value(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl Filters {
    /// Whether any filter is set (blank values do not count).
    pub fn is_active(&self) -> bool {
        [
            &self.q,
            &self.gpu,
            &self.cuda,
            &self.framework,
            &self.course,
        ]
        .into_iter()
        .any(|v| value(v).is_some())
    }
}

/// The images that pass the filters, in catalog order.
///
/// - `q`: case-insensitive substring of the name, display name,
///   description, a framework, a declared apt/pip/conda package or a VS Code
///   extension;
/// - `gpu`: `gpu` keeps GPU images, `cpu` CPU images, anything else is ignored;
/// - `cuda`: a version prefix at a component boundary (`12` and `12.4` match
///   `12.4.1`; `12.1` does not match `12.10`);
/// - `framework`, `course`: exact members of `frameworks` / `groups`.
///
/// Blank values mean "no filter".
pub fn filter<'a>(images: &'a [ImageDoc], filters: &Filters) -> Vec<&'a ImageDoc> {
    let q = value(&filters.q).map(str::to_lowercase);
    let gpu = match value(&filters.gpu) {
        Some(v) if v.eq_ignore_ascii_case("gpu") => Some(true),
        Some(v) if v.eq_ignore_ascii_case("cpu") => Some(false),
        _ => None,
    };
    let cuda = value(&filters.cuda);
    let framework = value(&filters.framework);
    let course = value(&filters.course);
    images
        .iter()
        .filter(|image| q.as_deref().is_none_or(|q| matches_text(image, q)))
        .filter(|image| gpu.is_none_or(|gpu| image.gpu == gpu))
        .filter(|image| {
            cuda.is_none_or(|want| {
                image
                    .cuda
                    .as_deref()
                    .is_some_and(|have| cuda_matches(have, want))
            })
        })
        .filter(|image| framework.is_none_or(|f| image.frameworks.iter().any(|x| x == f)))
        .filter(|image| course.is_none_or(|c| image.groups.iter().any(|x| x == c)))
        .collect()
}

/// `q` is already lowercase.
fn matches_text(image: &ImageDoc, q: &str) -> bool {
    let d = &image.declared;
    [&image.name, &image.display_name, &image.description]
        .into_iter()
        .chain(&image.frameworks)
        .chain(&d.apt)
        .chain(&d.pip)
        .chain(&d.conda)
        .chain(&d.vscode_extensions)
        .any(|s| s.to_lowercase().contains(q))
}

fn cuda_matches(have: &str, want: &str) -> bool {
    match have.strip_prefix(want) {
        Some(rest) => rest.is_empty() || rest.starts_with('.') || want.ends_with('.'),
        None => false,
    }
}

/// The choices of the index page's selects, from the images of the catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilterOptions {
    /// Distinct CUDA versions, in version order.
    pub cuda: Vec<String>,
    pub frameworks: Vec<String>,
    pub courses: Vec<String>,
}

impl FilterOptions {
    pub fn from_images(images: &[ImageDoc]) -> FilterOptions {
        let mut cuda: Vec<String> = images
            .iter()
            .filter_map(|i| i.cuda.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        cuda.sort_by(|a, b| version_key(a).cmp(&version_key(b)).then(a.cmp(b)));
        let frameworks = images
            .iter()
            .flat_map(|i| i.frameworks.iter().cloned())
            .collect::<BTreeSet<_>>();
        let courses = images
            .iter()
            .flat_map(|i| i.groups.iter().cloned())
            .collect::<BTreeSet<_>>();
        FilterOptions {
            cuda,
            frameworks: frameworks.into_iter().collect(),
            courses: courses.into_iter().collect(),
        }
    }

    /// Adds a filter value that is in the URL but not among the choices, so
    /// that the select shows what is applied.
    fn with_current(mut self, filters: &Filters) -> FilterOptions {
        fn add(list: &mut Vec<String>, v: Option<&str>) {
            if let Some(v) = v
                && !list.iter().any(|x| x == v)
            {
                list.push(v.to_string());
            }
        }
        add(&mut self.cuda, value(&filters.cuda));
        add(&mut self.frameworks, value(&filters.framework));
        add(&mut self.courses, value(&filters.course));
        self
    }
}

/// `12.4.1` → `[12, 4, 1]`; non-numeric parts count as 0.
fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// The filter values as the form shows them (blank when unset).
#[derive(Serialize)]
struct FormValues<'a> {
    q: &'a str,
    gpu: &'a str,
    cuda: &'a str,
    framework: &'a str,
    course: &'a str,
}

impl<'a> FormValues<'a> {
    fn new(f: &'a Filters) -> FormValues<'a> {
        FormValues {
            q: value(&f.q).unwrap_or(""),
            gpu: value(&f.gpu).map_or("", |g| {
                if g.eq_ignore_ascii_case("gpu") {
                    "gpu"
                } else if g.eq_ignore_ascii_case("cpu") {
                    "cpu"
                } else {
                    ""
                }
            }),
            cuda: value(&f.cuda).unwrap_or(""),
            framework: value(&f.framework).unwrap_or(""),
            course: value(&f.course).unwrap_or(""),
        }
    }
}

#[derive(Serialize)]
struct SiteView<'a> {
    title: &'a str,
    source: Option<&'a str>,
}

impl<'a> SiteView<'a> {
    fn new(site: &'a Site) -> SiteView<'a> {
        let title = site.title.trim();
        SiteView {
            title: if title.is_empty() {
                DEFAULT_TITLE
            } else {
                title
            },
            source: site.source.as_deref(),
        }
    }
}

/// One card of the list: the image and its current version.
#[derive(Serialize)]
struct Card<'a> {
    image: &'a ImageDoc,
    current: Option<&'a VersionDoc>,
}

#[derive(Serialize)]
struct PackageGroup<'a> {
    kind: &'a str,
    label: &'static str,
    count: usize,
    open: bool,
    packages: Vec<&'a PackageDoc>,
}

#[derive(Serialize)]
struct DeclaredGroup<'a> {
    label: &'static str,
    items: &'a [String],
}

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "deb" => "Debian packages (apt)",
        "pypi" => "Python packages (pip)",
        "conda" => "Conda packages",
        "npm" => "Node.js packages (npm)",
        _ => "Other packages",
    }
}

/// Groups packages by kind, keeping the order of first appearance (the
/// documents are sorted by kind already).
fn package_groups(packages: &[PackageDoc]) -> Vec<PackageGroup<'_>> {
    let mut groups: Vec<PackageGroup<'_>> = Vec::new();
    for p in packages {
        match groups.iter_mut().find(|g| g.kind == p.kind) {
            Some(g) => g.packages.push(p),
            None => groups.push(PackageGroup {
                kind: &p.kind,
                label: kind_label(&p.kind),
                count: 0,
                open: false,
                packages: vec![p],
            }),
        }
    }
    let single = groups.len() == 1;
    for g in &mut groups {
        g.count = g.packages.len();
        g.open = single || g.count <= OPEN_GROUP_MAX;
    }
    groups
}

pub struct Web {
    tera: Tera,
}

impl Web {
    pub fn new() -> Result<Web, WebError> {
        let mut tera = Tera::default();
        tera.autoescape_on(vec![".html"]);
        tera.set_escape_fn(escape_html);
        tera.register_filter("human_size", filter_human_size);
        tera.register_filter("day", filter_day);
        tera.register_filter("short_digest", filter_short_digest);
        tera.register_filter("gpus", filter_gpus);
        tera.register_filter("safe_url", filter_safe_url);
        tera.register_filter("path_segment", filter_path_segment);
        tera.add_raw_templates(TEMPLATES)
            .map_err(|e| WebError::template("(loading)", &e))?;
        Ok(Web { tera })
    }

    fn render(&self, template: &str, context: &Context) -> Result<String, WebError> {
        self.tera
            .render(template, context)
            .map_err(|e| WebError::template(template, &e))
    }

    /// `/`: the list, with the search form and filters.
    pub fn index(
        &self,
        catalog: &CatalogDoc,
        filters: &Filters,
        site: &Site,
    ) -> Result<String, WebError> {
        let shown = filter(&catalog.images, filters);
        let cards: Vec<Card<'_>> = shown
            .iter()
            .map(|image| Card {
                image,
                current: image.versions.first(),
            })
            .collect();
        let options = FilterOptions::from_images(&catalog.images).with_current(filters);
        let unavailable: &[Unavailable] = &catalog.unavailable;
        let mut ctx = Context::new();
        ctx.insert("page", "index");
        ctx.insert("site", &SiteView::new(site));
        ctx.insert("filters", &FormValues::new(filters));
        ctx.insert("active", &filters.is_active());
        ctx.insert("options", &options);
        ctx.insert("cards", &cards);
        ctx.insert("shown", &cards.len());
        ctx.insert("total", &catalog.images.len());
        ctx.insert("unavailable", unavailable);
        ctx.insert("generation", &catalog.generation);
        ctx.insert("generated_at", &catalog.generated_at);
        self.render("index.html", &ctx)
    }

    /// `/images/{name}`: what is inside, versions and their package diffs,
    /// launch and request-change links.
    pub fn image(&self, image: &ImageDoc, site: &Site) -> Result<String, WebError> {
        let d = &image.declared;
        let declared: Vec<DeclaredGroup<'_>> = [
            ("Python packages (pip)", &d.pip),
            ("Conda packages", &d.conda),
            ("Debian packages (apt)", &d.apt),
            ("VS Code extensions", &d.vscode_extensions),
        ]
        .into_iter()
        .filter(|(_, items)| !items.is_empty())
        .map(|(label, items)| DeclaredGroup {
            label,
            items: items.as_slice(),
        })
        .collect();
        let groups = image.packages.as_deref().map(package_groups);
        let mut ctx = Context::new();
        ctx.insert("page", "image");
        ctx.insert("site", &SiteView::new(site));
        ctx.insert("image", image);
        ctx.insert("current", &image.versions.first());
        ctx.insert("declared", &declared);
        ctx.insert("package_groups", &groups);
        ctx.insert(
            "package_count",
            &image.packages.as_ref().map_or(0, Vec::len),
        );
        ctx.insert(
            "launch_absolute",
            &(image.launch_url.starts_with("https://") || image.launch_url.starts_with("http://")),
        );
        self.render("image.html", &ctx)
    }

    /// An error page (404 for an unknown image, 503 while no catalog is loaded).
    pub fn error(&self, status: u16, message: &str, site: &Site) -> Result<String, WebError> {
        let heading = match status {
            404 => "Page not found",
            503 => "The catalog is not available yet",
            400..=499 => "This request cannot be answered",
            _ => "Something went wrong",
        };
        let mut ctx = Context::new();
        ctx.insert("page", "error");
        ctx.insert("site", &SiteView::new(site));
        ctx.insert("status", &status);
        ctx.insert("heading", heading);
        ctx.insert("message", message);
        self.render("error.html", &ctx)
    }
}

/// Escapes what matters in text and quoted attributes: the same escaping as
/// the profile list's names. Unlike Tera's default it leaves `/` alone, so
/// URLs stay readable in the source.
pub use labforge_core::spawner::escape_html;

/// Bytes as people read them, in decimal units like registries and Docker
/// show them: `5300000000` → `5.3 GB`, `512` → `512 B`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    // Display only: the precision lost above 2^53 bytes does not show.
    #[allow(clippy::cast_precision_loss)]
    let mut size = bytes as f64 / 1000.0;
    let mut unit = 0;
    while size >= 999.95 && unit + 1 < UNITS.len() {
        size /= 1000.0;
        unit += 1;
    }
    if size >= 100.0 {
        format!("{size:.0} {}", UNITS[unit])
    } else {
        format!("{size:.1} {}", UNITS[unit])
    }
}

/// `sha256:0123456789abcdef…` → `sha256:0123456789ab`.
pub fn short_digest(digest: &str) -> String {
    let (algo, hex) = digest.split_once(':').unwrap_or(("", digest));
    let short: String = hex.chars().take(12).collect();
    if algo.is_empty() {
        short
    } else {
        format!("{algo}:{short}")
    }
}

/// An RFC 3339 timestamp's date, `2026-05-01T10:00:00Z` → `2026-05-01`;
/// anything else is returned as it is.
pub fn day(timestamp: &str) -> &str {
    let date = timestamp.get(..10).unwrap_or(timestamp);
    let b = date.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if shaped { date } else { timestamp }
}

/// GPU counts offered, in words: `[]` → `GPU`, `[1]` → `1 GPU`,
/// `[1, 2, 4]` → `1, 2 or 4 GPUs`.
pub fn gpu_choices(choices: &[u32]) -> String {
    match choices {
        [] => "GPU".to_string(),
        [1] => "1 GPU".to_string(),
        [n] => format!("{n} GPUs"),
        [init @ .., last] => {
            let init: Vec<String> = init.iter().map(u32::to_string).collect();
            format!("{} or {last} GPUs", init.join(", "))
        }
    }
}

/// A URL that may go into `href`: `http(s)://…` or a site-relative path.
/// Anything else (`javascript:`, `data:`, protocol-relative `//host`) is
/// replaced by `#`.
pub fn safe_url(url: &str) -> &str {
    let url = url.trim();
    let lower = url.to_ascii_lowercase();
    let ok = lower.starts_with("https://")
        || lower.starts_with("http://")
        || (url.starts_with('/') && !url.starts_with("//") && !url.starts_with("/\\"));
    if ok { url } else { "#" }
}

/// Percent-encodes everything but RFC 3986's unreserved characters: one
/// path segment (an image name) or one query value.
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

type FilterArgs = HashMap<String, Value>;

fn filter_human_size(value: &Value, _: &FilterArgs) -> tera::Result<Value> {
    match value {
        Value::Number(n) => match n.as_u64() {
            Some(b) => Ok(Value::String(human_size(b))),
            None => Ok(Value::String(n.to_string())),
        },
        // KubeSpawner memory sizes: plain bytes or already human (`16G`).
        Value::String(s) => Ok(Value::String(match s.trim().parse::<u64>() {
            Ok(b) => human_size(b),
            Err(_) => s.clone(),
        })),
        Value::Null => Ok(Value::String("unknown".to_string())),
        other => Err(tera::Error::msg(format!(
            "human_size expects a number of bytes, got {other}"
        ))),
    }
}

fn filter_day(value: &Value, _: &FilterArgs) -> tera::Result<Value> {
    match value {
        Value::String(s) => Ok(Value::String(day(s).to_string())),
        Value::Null => Ok(Value::String(String::new())),
        other => Err(tera::Error::msg(format!(
            "day expects an RFC 3339 string, got {other}"
        ))),
    }
}

fn filter_short_digest(value: &Value, _: &FilterArgs) -> tera::Result<Value> {
    match value {
        Value::String(s) => Ok(Value::String(short_digest(s))),
        other => Err(tera::Error::msg(format!(
            "short_digest expects a digest string, got {other}"
        ))),
    }
}

fn filter_gpus(value: &Value, _: &FilterArgs) -> tera::Result<Value> {
    let choices: Vec<u32> = serde_json::from_value(value.clone())
        .map_err(|e| tera::Error::msg(format!("gpus expects a list of counts: {e}")))?;
    Ok(Value::String(gpu_choices(&choices)))
}

fn filter_safe_url(value: &Value, _: &FilterArgs) -> tera::Result<Value> {
    match value {
        Value::String(s) => Ok(Value::String(safe_url(s).to_string())),
        _ => Ok(Value::String("#".to_string())),
    }
}

fn filter_path_segment(value: &Value, _: &FilterArgs) -> tera::Result<Value> {
    match value {
        Value::String(s) => Ok(Value::String(path_segment(s))),
        other => Err(tera::Error::msg(format!(
            "path_segment expects a string, got {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_size_uses_decimal_units() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1000), "1.0 kB");
        assert_eq!(human_size(5_300_000_000), "5.3 GB");
        assert_eq!(human_size(999_960_000), "1.0 GB");
        assert_eq!(human_size(123_456_789), "123 MB");
    }

    #[test]
    fn day_keeps_only_well_formed_dates() {
        assert_eq!(day("2026-05-01T10:00:00Z"), "2026-05-01");
        assert_eq!(day("2026-05-01"), "2026-05-01");
        assert_eq!(day("yesterday"), "yesterday");
        assert_eq!(day("2026/05/01 10:00"), "2026/05/01 10:00");
    }

    #[test]
    fn short_digest_keeps_algorithm_and_twelve_hex() {
        assert_eq!(
            short_digest("sha256:0123456789abcdef"),
            "sha256:0123456789ab"
        );
        assert_eq!(short_digest("abc"), "abc");
    }

    #[test]
    fn gpu_choices_in_words() {
        assert_eq!(gpu_choices(&[]), "GPU");
        assert_eq!(gpu_choices(&[1]), "1 GPU");
        assert_eq!(gpu_choices(&[2]), "2 GPUs");
        assert_eq!(gpu_choices(&[1, 2, 4]), "1, 2 or 4 GPUs");
    }

    #[test]
    fn safe_url_rejects_script_and_protocol_relative() {
        assert_eq!(safe_url("https://x.example/a"), "https://x.example/a");
        assert_eq!(safe_url("/hub/spawn?profile=a"), "/hub/spawn?profile=a");
        assert_eq!(safe_url("javascript:alert(1)"), "#");
        assert_eq!(safe_url(" JavaScript:alert(1)"), "#");
        assert_eq!(safe_url("//evil.example"), "#");
        assert_eq!(safe_url("data:text/html,x"), "#");
    }

    #[test]
    fn cuda_prefix_matches_at_component_boundary() {
        assert!(cuda_matches("12.4.1", "12"));
        assert!(cuda_matches("12.4.1", "12.4"));
        assert!(cuda_matches("12.4.1", "12.4.1"));
        assert!(!cuda_matches("12.10", "12.1"));
        assert!(!cuda_matches("11.8", "12"));
    }

    #[test]
    fn path_segment_encodes_reserved() {
        assert_eq!(path_segment("deeplearning-cuda"), "deeplearning-cuda");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }
}
