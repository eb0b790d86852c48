//! Reading catalog files into typed values, reporting every problem with its place.

use std::collections::BTreeMap;

use crate::formats;
use crate::scan::Severity;
use crate::scan::policy::{Date, Policy, PolicyOverride, Waiver};
use crate::yaml::{Kind, MapReader, Node, Pos, Reader, Spanned, index, join};

use super::model::{
    Base, GpuPool, Gpus, Memory, ParentRef, ProfileFields, Registry, Settings, SmokeTest,
    Toleration,
};

/// Limits that keep a catalog file reviewable.
pub const MAX_PACKAGES: usize = 300;
const MAX_ENTRIES: usize = 100;

/// The fields an image body and a variant value share.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    /// Human label of a variant value (only on variant values).
    pub label: Option<String>,
    pub description: Option<String>,
    pub parent: Option<Spanned<ParentRef>>,
    /// A base or parent was written (even if it was invalid and reported).
    pub parent_given: bool,
    pub apt: Vec<Spanned<String>>,
    pub pip: Vec<Spanned<String>>,
    pub conda: Vec<Spanned<String>>,
    pub vscode: Vec<Spanned<String>>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub build_args: BTreeMap<String, String>,
    pub tests: Vec<Spanned<SmokeTest>>,
    pub profile: ProfileFields,
    pub profile_display_name_pos: Option<Pos>,
}

#[derive(Debug, Clone)]
pub struct AxisValue {
    pub name: Spanned<String>,
    pub fields: Fields,
}

#[derive(Debug, Clone)]
pub struct Axis {
    pub name: Spanned<String>,
    pub values: Vec<AxisValue>,
}

/// One image file as written, before variant expansion.
#[derive(Debug, Clone)]
pub struct ImageFile {
    pub file: String,
    pub name: Spanned<String>,
    pub template: Spanned<String>,
    pub body: Fields,
    pub matrix: Vec<Axis>,
    pub exclude: Vec<Spanned<Vec<(String, String)>>>,
    pub default_variant: Option<Spanned<String>>,
    pub owners: Vec<String>,
    pub issue: Option<u64>,
    /// Whether the builder's default server test (`/api` answers) runs.
    pub server_test: bool,
    /// What the image changes in the catalog-wide scan policy.
    pub scan: PolicyOverride,
    pub pos: Pos,
}

const SETTINGS_KEYS: &[&str] = &[
    "registry",
    "platform",
    "vendor",
    "source",
    "code_server",
    "bases",
    "defaults",
    "scan",
];
const IMAGE_KEYS: &[&str] = &[
    "name",
    "description",
    "template",
    "base",
    "parent",
    "matrix",
    "exclude",
    "default_variant",
    "packages",
    "vscode",
    "env",
    "labels",
    "build_args",
    "tests",
    "profile",
    "owners",
    "issue",
    "server_test",
    "scan",
];
const VARIANT_KEYS: &[&str] = &[
    "label",
    "description",
    "base",
    "parent",
    "packages",
    "vscode",
    "env",
    "labels",
    "build_args",
    "tests",
    "profile",
];
/// What `defaults.profile` may set: resources and placement, not identity.
const DEFAULT_PROFILE_KEYS: &[&str] = &["cpu", "memory", "node_selector", "tolerations", "groups"];
const PROFILE_KEYS: &[&str] = &[
    "display_name",
    "description",
    "slug",
    "default",
    "gpus",
    "cpu",
    "memory",
    "node_selector",
    "tolerations",
    "groups",
];

pub fn settings(r: &mut Reader<'_>, root: &Node) -> Option<Settings> {
    let mut m = r.map(root, "")?;
    let registry = m.get("registry").and_then(|n| {
        let mut rm = r.map(n, "registry")?;
        let host = rm
            .require(r, "host")
            .and_then(|h| r.token(h, "registry.host", formats::registry_host));
        let prefix = match rm.get("prefix") {
            Some(p) => r.token(p, "registry.prefix", formats::repository_path),
            None => Some(String::new()),
        };
        rm.finish(r, &["host", "prefix"]);
        Some(Registry {
            host: host?,
            prefix: prefix?,
        })
    });
    let platform = match m.get("platform") {
        Some(p) => r.token(p, "platform", formats::platform),
        None => Some("linux/amd64".to_string()),
    };
    let vendor = m
        .get("vendor")
        .and_then(|v| r.line(v, "vendor"))
        .unwrap_or_default();
    let source = m.get("source").and_then(|v| {
        r.token(v, "source", |s| {
            if s.starts_with("https://") && !s.contains(char::is_whitespace) {
                Ok(())
            } else {
                Err("is not an https:// URL".into())
            }
        })
    });
    let code_server_version = m.get("code_server").and_then(|n| {
        let mut cm = r.map(n, "code_server")?;
        let v = cm
            .require(r, "version")
            .and_then(|v| r.token(v, "code_server.version", formats::dotted_version));
        cm.finish(r, &["version"]);
        v
    });
    let mut bases = BTreeMap::new();
    if let Some(n) = m.require(r, "bases")
        && let Some(mut bm) = r.map(n, "bases")
    {
        for (name, key, value) in bm.entries() {
            let path = join("bases", name);
            if let Err(why) = formats::base_name(name) {
                r.error(key.pos, &path, format!("{name:?} {why}"));
                continue;
            }
            if let Some(base) = base(r, value, &path, name) {
                bases.insert(name.to_string(), base);
            }
        }
    }
    let (default_profile, gpu_pool) = match m.get("defaults") {
        Some(n) => defaults(r, n),
        None => (ProfileFields::default(), GpuPool::default()),
    };
    let scan = m
        .get("scan")
        .map(|n| Policy::default().with(&scan_policy(r, n, "scan")))
        .unwrap_or_default();
    m.finish(r, SETTINGS_KEYS);
    Some(Settings {
        registry,
        platform: platform?,
        vendor,
        source,
        code_server_version: code_server_version.unwrap_or_else(|| "4.96.4".to_string()),
        bases,
        default_profile,
        gpu_pool,
        scan,
    })
}

fn base(r: &mut Reader<'_>, node: &Node, path: &str, name: &str) -> Option<Base> {
    let mut m = r.map(node, path)?;
    let image = m
        .require(r, "image")
        .and_then(|n| r.token(n, &m.at("image"), formats::image_reference));
    let opt_version = |m: &mut MapReader<'_>, r: &mut Reader<'_>, key: &str| {
        m.get(key)
            .and_then(|n| r.token(n, &m.at(key), formats::dotted_version))
    };
    let cuda = opt_version(&mut m, r, "cuda");
    let cudnn = opt_version(&mut m, r, "cudnn");
    let min_driver = opt_version(&mut m, r, "min_driver");
    let os = m
        .get("os")
        .and_then(|n| r.token(n, &m.at("os"), formats::slug));
    let description = m
        .get("description")
        .and_then(|n| r.line(n, &m.at("description")));
    if cuda.is_some() && m.get("min_driver").is_none() {
        r.error(
            m.pos,
            path,
            "a CUDA base must say its minimum NVIDIA driver (min_driver), so users and the hub know which nodes can run it",
        );
    }
    let pos = m.pos;
    m.finish(
        r,
        &["image", "description", "cuda", "cudnn", "min_driver", "os"],
    );
    Some(Base {
        name: name.to_string(),
        image: image?,
        description,
        cuda,
        cudnn,
        min_driver,
        os,
        pos,
    })
}

fn defaults(r: &mut Reader<'_>, node: &Node) -> (ProfileFields, GpuPool) {
    let Some(mut m) = r.map(node, "defaults") else {
        return Default::default();
    };
    let profile = m
        .get("profile")
        .map(|n| profile(r, n, "defaults.profile", DEFAULT_PROFILE_KEYS).0)
        .unwrap_or_default();
    let mut pool = GpuPool::default();
    if let Some(n) = m.get("gpu")
        && let Some(mut gm) = r.map(n, "defaults.gpu")
    {
        if let Some(ns) = gm.get("node_selector") {
            pool.node_selector = node_selector(r, ns, "defaults.gpu.node_selector");
        }
        if let Some(t) = gm.get("tolerations") {
            pool.tolerations = tolerations(r, t, "defaults.gpu.tolerations");
        }
        gm.finish(r, &["node_selector", "tolerations"]);
    }
    m.finish(r, &["profile", "gpu"]);
    (profile, pool)
}

pub fn image_file(r: &mut Reader<'_>, root: &Node) -> Option<ImageFile> {
    let mut m = r.map(root, "")?;
    let name = m.require(r, "name").and_then(|n| {
        let value = r.token(n, "name", |s| {
            formats::slug(s)?;
            if s.len() > 40 {
                return Err("is too long (an image name has at most 40 characters, so that variant names stay within 63)".into());
            }
            Ok(())
        })?;
        Some(Spanned { value, pos: n.pos })
    });
    let template = m.require(r, "template").and_then(|n| {
        let value = r.token(n, "template", template_name)?;
        Some(Spanned { value, pos: n.pos })
    });
    let body = fields(r, &mut m, false);
    let mut matrix = Vec::new();
    if let Some(n) = m.get("matrix")
        && let Some(mut mm) = r.map(n, "matrix")
    {
        for (axis, key, value) in mm.entries() {
            let path = join("matrix", axis);
            if let Err(why) = formats::slug(axis) {
                r.error(key.pos, &path, format!("{axis:?} {why}"));
                continue;
            }
            let Some(mut vm) = r.map(value, &path) else {
                continue;
            };
            let mut values = Vec::new();
            for (vname, vkey, vnode) in vm.entries() {
                let vpath = join(&path, vname);
                if let Err(why) = formats::slug(vname) {
                    r.error(vkey.pos, &vpath, format!("{vname:?} {why}"));
                    continue;
                }
                let fields = match &vnode.kind {
                    Kind::Null => Fields::default(),
                    _ => match r.map(vnode, &vpath) {
                        Some(mut fm) => {
                            let f = fields(r, &mut fm, true);
                            fm.finish(r, VARIANT_KEYS);
                            f
                        }
                        None => continue,
                    },
                };
                values.push(AxisValue {
                    name: Spanned {
                        value: vname.to_string(),
                        pos: vkey.pos,
                    },
                    fields,
                });
            }
            if values.is_empty() {
                r.error(value.pos, &path, "a matrix axis needs at least one value");
            }
            if values.len() > 16 {
                r.error(value.pos, &path, "at most 16 values per axis");
            }
            matrix.push(Axis {
                name: Spanned {
                    value: axis.to_string(),
                    pos: key.pos,
                },
                values,
            });
        }
        if matrix.len() > 3 {
            r.error(
                n.pos,
                "matrix",
                "at most 3 axes (the matrix is meant to stay small)",
            );
        }
    }
    let mut exclude = Vec::new();
    if let Some(n) = m.get("exclude") {
        for (path, pos, mut em) in r.map_list(n, "exclude") {
            let mut combo = Vec::new();
            for (axis, _, value) in em.entries() {
                if let Some(v) = r.line(value, &join(&path, axis)) {
                    combo.push((axis.to_string(), v));
                }
            }
            exclude.push(Spanned { value: combo, pos });
        }
    }
    let default_variant = m.get("default_variant").and_then(|n| {
        let value = r.token(n, "default_variant", formats::slug)?;
        Some(Spanned { value, pos: n.pos })
    });
    let owners = m
        .get("owners")
        .map(|n| r.token_list(n, "owners", 20, formats::github_login))
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.value)
        .collect();
    let issue = m
        .get("issue")
        .and_then(|n| r.int(n, "issue", 1, i64::from(u32::MAX)))
        .and_then(|i| u64::try_from(i).ok());
    let server_test = m
        .get("server_test")
        .and_then(|n| r.bool(n, "server_test"))
        .unwrap_or(true);
    let scan = m
        .get("scan")
        .map(|n| scan_policy(r, n, "scan"))
        .unwrap_or_default();
    let pos = m.pos;
    m.finish(r, IMAGE_KEYS);
    Some(ImageFile {
        file: r.file.clone(),
        name: name?,
        template: template?,
        body,
        matrix,
        exclude,
        default_variant,
        owners,
        issue,
        server_test,
        scan,
        pos,
    })
}

/// Most waivers a catalog may carry: each one is an accepted risk someone
/// has to review.
const MAX_WAIVERS: usize = 200;

/// A `scan:` block: the catalog-wide policy in `catalog.yaml`, or what one
/// image changes in it.
fn scan_policy(r: &mut Reader<'_>, node: &Node, path: &str) -> PolicyOverride {
    let Some(mut m) = r.map(node, path) else {
        return PolicyOverride::default();
    };
    let severity = |r: &mut Reader<'_>, m: &mut MapReader<'_>, key: &str| {
        let n = m.get(key)?;
        let text = r.line(n, &m.at(key))?;
        match Severity::parse(&text) {
            Some(s) if s != Severity::Unknown => Some(s),
            _ => {
                r.error(
                    n.pos,
                    &m.at(key),
                    format!("{text:?} is not a severity (low, medium, high or critical)"),
                );
                None
            }
        }
    };
    let threshold = severity(r, &mut m, "severity");
    let unknown_severity = severity(r, &mut m, "unknown_severity");
    let fixed_only = m
        .get("fixed_only")
        .and_then(|n| r.bool(n, &m.at("fixed_only")));
    let mut waivers = Vec::new();
    if let Some(n) = m.get("waivers") {
        let list_path = m.at("waivers");
        if let Some(items) = r.seq(n, &list_path)
            && items.len() > MAX_WAIVERS
        {
            r.error(
                n.pos,
                &list_path,
                format!("{} waivers, at most {MAX_WAIVERS} are allowed", items.len()),
            );
        }
        for (_, _, mut wm) in r.map_list(n, &list_path) {
            let id = wm
                .require(r, "id")
                .and_then(|n| r.token(n, &wm.at("id"), formats::advisory_id));
            let reason = wm
                .require(r, "reason")
                .and_then(|n| r.line(n, &wm.at("reason")));
            let approved_by = wm
                .require(r, "approved_by")
                .and_then(|n| r.line(n, &wm.at("approved_by")));
            let expires = wm.require(r, "expires").and_then(|n| {
                let text = r.line(n, &wm.at("expires"))?;
                match Date::parse(&text) {
                    Ok(d) => Some(d),
                    Err(why) => {
                        r.error(n.pos, &wm.at("expires"), why);
                        None
                    }
                }
            });
            let packages = wm
                .get("packages")
                .map(|n| r.token_list(n, &wm.at("packages"), MAX_ENTRIES, formats::package_token))
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.value)
                .collect();
            if reason.as_deref().is_some_and(|t| t.trim().is_empty()) {
                r.error(wm.pos, &wm.at("reason"), "a waiver needs a reason");
            }
            wm.finish(r, &["id", "reason", "expires", "approved_by", "packages"]);
            if let (Some(id), Some(reason), Some(expires), Some(approved_by)) =
                (id, reason, expires, approved_by)
            {
                waivers.push(Waiver {
                    id,
                    packages,
                    reason,
                    expires,
                    approved_by,
                });
            }
        }
    }
    m.finish(
        r,
        &["severity", "fixed_only", "unknown_severity", "waivers"],
    );
    PolicyOverride {
        severity: threshold,
        fixed_only,
        unknown_severity,
        waivers,
    }
}

fn template_name(s: &str) -> Result<(), String> {
    let ok = s.ends_with(".Dockerfile.tera")
        && !s.contains("..")
        && !s.starts_with('/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'));
    if ok {
        Ok(())
    } else {
        Err("is not a template name (a file under dockerfiles/ ending in .Dockerfile.tera, e.g. \"notebook.Dockerfile.tera\")".into())
    }
}

/// The shared fields of an image body or a variant value.
fn fields(r: &mut Reader<'_>, m: &mut MapReader<'_>, variant: bool) -> Fields {
    let mut f = Fields::default();
    if variant {
        f.label = m.get("label").and_then(|n| r.line(n, &m.at("label")));
    }
    f.description = m
        .get("description")
        .and_then(|n| r.text(n, &m.at("description"), formats::no_html));
    let base = m.get("base");
    let parent = m.get("parent");
    if let (Some(_), Some(p)) = (base, parent) {
        r.error(
            p.pos,
            &m.at("parent"),
            "give either base (a named base from catalog.yaml) or parent (another catalog image), not both",
        );
    }
    f.parent_given = base.is_some() || parent.is_some();
    if let Some(n) = base
        && let Some(v) = r.token(n, &m.at("base"), formats::base_name)
    {
        f.parent = Some(Spanned {
            value: ParentRef::Base(v),
            pos: n.pos,
        });
    } else if let Some(n) = parent
        && let Some(v) = r.token(n, &m.at("parent"), formats::slug)
    {
        f.parent = Some(Spanned {
            value: ParentRef::Image(v),
            pos: n.pos,
        });
    }
    if let Some(n) = m.get("packages")
        && let Some(mut pm) = r.map(n, &m.at("packages"))
    {
        let list = |r: &mut Reader<'_>,
                    pm: &mut MapReader<'_>,
                    key: &str,
                    check: fn(&str) -> Result<(), String>| {
            pm.get(key)
                .map(|n| r.token_list(n, &pm.at(key), MAX_PACKAGES, check))
                .unwrap_or_default()
        };
        f.apt = list(r, &mut pm, "apt", formats::apt_package);
        f.pip = list(r, &mut pm, "pip", formats::pip_requirement);
        f.conda = list(r, &mut pm, "conda", formats::conda_package);
        pm.finish(r, &["apt", "pip", "conda"]);
    }
    if let Some(n) = m.get("vscode")
        && let Some(mut vm) = r.map(n, &m.at("vscode"))
    {
        if let Some(e) = vm.get("extensions") {
            f.vscode = r.token_list(e, &vm.at("extensions"), MAX_ENTRIES, formats::openvsx_id);
        }
        vm.finish(r, &["extensions"]);
    }
    if let Some(n) = m.get("env") {
        f.env = string_map(r, n, &m.at("env"), formats::settable_variable);
    }
    if let Some(n) = m.get("labels") {
        f.labels = string_map(r, n, &m.at("labels"), |k| {
            formats::oci_label_key(k)?;
            if k.starts_with("labforge.") || k.starts_with("org.opencontainers.") {
                return Err(
                    "is reserved: labforge sets labforge.* and org.opencontainers.* labels itself"
                        .into(),
                );
            }
            Ok(())
        });
    }
    if let Some(n) = m.get("build_args") {
        f.build_args = string_map(r, n, &m.at("build_args"), |k| {
            formats::settable_variable(k)?;
            if k == "BASE_IMAGE" {
                return Err("is reserved: labforge passes the parent image as BASE_IMAGE".into());
            }
            Ok(())
        });
    }
    if let Some(n) = m.get("tests") {
        f.tests = tests(r, n, &m.at("tests"));
    }
    if let Some(n) = m.get("profile") {
        let (p, dn_pos) = profile(r, n, &m.at("profile"), PROFILE_KEYS);
        f.profile = p;
        f.profile_display_name_pos = dn_pos;
    }
    f
}

fn string_map(
    r: &mut Reader<'_>,
    node: &Node,
    path: &str,
    key_check: impl Fn(&str) -> Result<(), String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(mut m) = r.map(node, path) else {
        return out;
    };
    let entries = m.entries();
    if entries.len() > MAX_ENTRIES {
        r.error(node.pos, path, format!("at most {MAX_ENTRIES} entries"));
    }
    for (k, key, value) in entries {
        let p = join(path, k);
        if let Err(why) = key_check(k) {
            r.error(key.pos, &p, format!("{k:?} {why}"));
            continue;
        }
        if let Some(v) = r.line(value, &p) {
            out.insert(k.to_string(), v);
        }
    }
    out
}

fn tests(r: &mut Reader<'_>, node: &Node, path: &str) -> Vec<Spanned<SmokeTest>> {
    let mut out = Vec::new();
    for (_, pos, mut m) in r.map_list(node, path) {
        let name = m
            .require(r, "name")
            .and_then(|n| r.token(n, &m.at("name"), formats::slug));
        let run = m.require(r, "run").and_then(|n| {
            let s = r.string(n, &m.at("run"))?;
            if s.trim().is_empty() {
                r.error(n.pos, &m.at("run"), "is empty; give the command to run");
                return None;
            }
            Some(s)
        });
        let gpu = m
            .get("gpu")
            .and_then(|n| r.bool(n, &m.at("gpu")))
            .unwrap_or(false);
        let vscode = m
            .get("vscode")
            .and_then(|n| r.bool(n, &m.at("vscode")))
            .unwrap_or(false);
        let real_base = m
            .get("real_base")
            .and_then(|n| r.bool(n, &m.at("real_base")))
            .unwrap_or(false);
        let timeout = m
            .get("timeout")
            .and_then(|n| r.int(n, &m.at("timeout"), 1, 3600))
            .unwrap_or(120);
        m.finish(r, &["name", "run", "gpu", "vscode", "real_base", "timeout"]);
        if let (Some(name), Some(run)) = (name, run) {
            out.push(Spanned {
                value: SmokeTest {
                    name,
                    run,
                    gpu,
                    vscode,
                    real_base,
                    timeout_seconds: u32::try_from(timeout).unwrap_or(120),
                    pos,
                },
                pos,
            });
        }
    }
    out
}

fn cpu(r: &mut Reader<'_>, node: &Node, path: &str) -> Option<f64> {
    let v = match node.kind {
        Kind::Int(i) => i as f64,
        Kind::Float(f) => f,
        Kind::Str(_) => {
            r.error(
                node.pos,
                path,
                "must be a number, not a string: KubeSpawner rejects \"2\" for cpu (write 2 or 0.5)",
            );
            return None;
        }
        _ => {
            r.error(
                node.pos,
                path,
                format!("expected a number of CPUs, found {}", node.describe()),
            );
            return None;
        }
    };
    if !(v > 0.0 && v <= 1024.0) {
        r.error(
            node.pos,
            path,
            format!("{v} is out of range (more than 0, at most 1024 CPUs)"),
        );
        return None;
    }
    Some(v)
}

fn memory(r: &mut Reader<'_>, node: &Node, path: &str) -> Option<Memory> {
    match &node.kind {
        Kind::Int(i) if *i > 0 => u64::try_from(*i).ok().map(Memory::Bytes),
        Kind::Str(_) => r.token(node, path, formats::memory).map(Memory::Text),
        _ => {
            r.error(
                node.pos,
                path,
                format!(
                    "expected a memory size such as \"8G\" or a number of bytes, found {}",
                    node.describe()
                ),
            );
            None
        }
    }
}

fn limit_guarantee<T>(
    r: &mut Reader<'_>,
    node: &Node,
    path: &str,
    read: fn(&mut Reader<'_>, &Node, &str) -> Option<T>,
) -> (Option<T>, Option<T>) {
    let Some(mut m) = r.map(node, path) else {
        return (None, None);
    };
    let limit = m.get("limit").and_then(|n| read(r, n, &m.at("limit")));
    let guarantee = m
        .get("guarantee")
        .and_then(|n| read(r, n, &m.at("guarantee")));
    m.finish(r, &["limit", "guarantee"]);
    (limit, guarantee)
}

fn gpus(r: &mut Reader<'_>, node: &Node, path: &str) -> Option<Gpus> {
    let count = |r: &mut Reader<'_>, n: &Node, p: &str| -> Option<u32> {
        match n.kind {
            Kind::Float(_) => {
                r.error(n.pos, p, "GPUs are whole devices: Kubernetes accepts only whole numbers for nvidia.com/gpu");
                None
            }
            _ => r.int(n, p, 1, 16).and_then(|i| u32::try_from(i).ok()),
        }
    };
    match &node.kind {
        // An explicit 0 (e.g. in a CPU variant) switches GPUs off.
        Kind::Int(0) => Some(Gpus::Count(0)),
        Kind::Map(_) => {
            let mut m = r.map(node, path)?;
            let choices: Vec<u32> = match m.require(r, "choices") {
                Some(n) => {
                    let items = r.seq(n, &m.at("choices")).unwrap_or(&[]);
                    let mut out = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        if let Some(c) = count(r, item, &index(&m.at("choices"), i)) {
                            if out.contains(&c) {
                                r.error(
                                    item.pos,
                                    &index(&m.at("choices"), i),
                                    format!("{c} is listed twice"),
                                );
                            }
                            out.push(c);
                        }
                    }
                    if items.is_empty() {
                        r.error(n.pos, &m.at("choices"), "give at least one GPU count");
                    }
                    out
                }
                None => Vec::new(),
            };
            let default = match m.get("default") {
                Some(n) => {
                    let d = count(r, n, &m.at("default"));
                    if let Some(d) = d
                        && !choices.is_empty()
                        && !choices.contains(&d)
                    {
                        r.error(
                            n.pos,
                            &m.at("default"),
                            format!("{d} is not one of the choices"),
                        );
                    }
                    d
                }
                None => choices.first().copied(),
            };
            m.finish(r, &["choices", "default"]);
            Some(Gpus::Choices {
                choices,
                default: default?,
            })
        }
        _ => count(r, node, path).map(Gpus::Count),
    }
}

fn node_selector(r: &mut Reader<'_>, node: &Node, path: &str) -> BTreeMap<String, String> {
    let map = string_map(r, node, path, formats::k8s_label_key);
    for (k, v) in &map {
        if let Err(why) = formats::k8s_label_value(v) {
            r.error(node.pos, &join(path, k), format!("{v:?} {why}"));
        }
    }
    map
}

fn tolerations(r: &mut Reader<'_>, node: &Node, path: &str) -> Vec<Toleration> {
    let mut out = Vec::new();
    for (p, pos, mut m) in r.map_list(node, path) {
        let mut t = Toleration {
            key: m
                .get("key")
                .and_then(|n| r.token(n, &m.at("key"), formats::k8s_label_key)),
            operator: m.get("operator").and_then(|n| {
                r.token(n, &m.at("operator"), |s| match s {
                    "Equal" | "Exists" => Ok(()),
                    _ => Err("is not a toleration operator (Equal or Exists)".into()),
                })
            }),
            value: m
                .get("value")
                .and_then(|n| r.token(n, &m.at("value"), formats::k8s_label_value)),
            effect: m.get("effect").and_then(|n| {
                r.token(n, &m.at("effect"), |s| match s {
                    "NoSchedule" | "PreferNoSchedule" | "NoExecute" => Ok(()),
                    _ => Err(
                        "is not a taint effect (NoSchedule, PreferNoSchedule or NoExecute)".into(),
                    ),
                })
            }),
            toleration_seconds: None,
        };
        if let Some(n) = m.get("tolerationSeconds") {
            t.toleration_seconds = r.int(n, &m.at("tolerationSeconds"), 0, i64::from(u32::MAX));
        }
        if t.toleration_seconds.is_some() && t.effect.as_deref() != Some("NoExecute") {
            r.error(
                pos,
                &p,
                "tolerationSeconds is only allowed with effect NoExecute (Kubernetes rejects it otherwise)",
            );
        }
        if t.operator.as_deref() == Some("Exists") && t.value.is_some() {
            r.error(
                pos,
                &p,
                "a toleration with operator Exists must not have a value",
            );
        }
        if t.key.is_none() && t.operator.as_deref() != Some("Exists") {
            r.error(
                pos,
                &p,
                "a toleration without a key must use operator Exists",
            );
        }
        m.finish(
            r,
            &["key", "operator", "value", "effect", "tolerationSeconds"],
        );
        out.push(t);
    }
    out
}

fn profile(
    r: &mut Reader<'_>,
    node: &Node,
    path: &str,
    allowed: &[&str],
) -> (ProfileFields, Option<Pos>) {
    let mut p = ProfileFields::default();
    let Some(mut m) = r.map(node, path) else {
        return (p, None);
    };
    let dn = pick(&mut m, allowed, "display_name");
    let dn_pos = dn.map(|n| n.pos);
    p.display_name = dn.and_then(|n| r.token(n, &m.at("display_name"), formats::no_html));
    p.description = pick(&mut m, allowed, "description")
        .and_then(|n| r.text(n, &m.at("description"), formats::no_html));
    p.slug = pick(&mut m, allowed, "slug").and_then(|n| {
        let value = r.token(n, &m.at("slug"), formats::slug)?;
        Some(Spanned { value, pos: n.pos })
    });
    let default = pick(&mut m, allowed, "default");
    p.default_pos = default.map(|n| n.pos);
    p.default = default.and_then(|n| r.bool(n, &m.at("default")));
    let gpus_node = pick(&mut m, allowed, "gpus");
    p.gpus_pos = gpus_node.map(|n| n.pos);
    p.gpus = gpus_node.and_then(|n| gpus(r, n, &m.at("gpus")));
    if let Some(n) = pick(&mut m, allowed, "cpu") {
        (p.cpu_limit, p.cpu_guarantee) = limit_guarantee(r, n, &m.at("cpu"), cpu);
    }
    if let Some(n) = pick(&mut m, allowed, "memory") {
        (p.mem_limit, p.mem_guarantee) = limit_guarantee(r, n, &m.at("memory"), memory);
    }
    if let Some(n) = pick(&mut m, allowed, "node_selector") {
        p.node_selector = node_selector(r, n, &m.at("node_selector"));
    }
    p.tolerations =
        pick(&mut m, allowed, "tolerations").map(|n| tolerations(r, n, &m.at("tolerations")));
    p.groups = pick(&mut m, allowed, "groups").map(|n| {
        r.token_list(n, &m.at("groups"), MAX_ENTRIES, formats::group)
            .into_iter()
            .map(|s| s.value)
            .collect()
    });
    m.finish(r, allowed);
    (p, dn_pos)
}

/// A key of `m`, if this kind of mapping allows it (others are reported by `finish`).
fn pick<'n>(m: &mut MapReader<'n>, allowed: &[&str], key: &str) -> Option<&'n Node> {
    if allowed.contains(&key) {
        m.get(key)
    } else {
        None
    }
}
