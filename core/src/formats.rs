//! Checks for the value formats the catalog accepts: package names and
//! version specifiers (PEP 508 / PEP 440), Debian package names, Open VSX
//! extension ids, Kubernetes label keys and values, the CPU and memory formats
//! KubeSpawner accepts, image references and names.
//!
//! Each check returns `Err(why)` where `why` completes the sentence
//! `"<value>" <why>`, so that messages read naturally and say what is allowed.
//! These are the only gates between text and a rendered file: the bot's
//! request parser reuses them.

use std::sync::LazyLock;

use regex::Regex;

fn re(pattern: &str) -> Regex {
    // The patterns below are literals checked by the unit tests.
    Regex::new(pattern).unwrap_or_else(|e| panic!("bad built-in pattern {pattern}: {e}"))
}

static PEP508_NAME: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(?i)[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?$"));
static PEP440_VERSION: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?x)^(?i)v?
        (?:[0-9]+!)?
        [0-9]+(?:\.[0-9]+)*
        (?:[-_.]?(?:alpha|a|beta|b|preview|pre|c|rc)[-_.]?[0-9]*)?
        (?:-[0-9]+|[-_.]?(?:post|rev|r)[-_.]?[0-9]*)?
        (?:[-_.]?dev[-_.]?[0-9]*)?
        (?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?$")
});
static RELEASE_ONLY: LazyLock<Regex> = LazyLock::new(|| re(r"^(?:[0-9]+!)?[0-9]+(?:\.[0-9]+)*$"));
static DEBIAN_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z0-9][a-z0-9+.-]+$"));
static DEBIAN_VERSION: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(?:[0-9]+:)?[0-9][A-Za-z0-9.+~-]*$"));
static CONDA_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z0-9_][a-z0-9_.-]*$"));
static CONDA_VERSION: LazyLock<Regex> = LazyLock::new(|| re(r"^[0-9][A-Za-z0-9._*+!]*$"));
static OPENVSX_ID: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^[A-Za-z0-9][A-Za-z0-9-]*\.[A-Za-z0-9][A-Za-z0-9-]*(?:@[0-9]+\.[0-9]+\.[0-9]+)?$")
});
static DNS_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$")
});
static LABEL_NAME: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?$"));
static SLUG: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z0-9]+(?:-[a-z0-9]+)*$"));
static BASE_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$"));
static ENV_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z_][A-Za-z0-9_]*$"));
static MEMORY: LazyLock<Regex> = LazyLock::new(|| re(r"^[0-9]+(?:\.[0-9]+)?[KMGT]$"));
static GITHUB_LOGIN: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-[A-Za-z0-9]){0,38}$"));
static GROUP: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"));
static REPO_PATH: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
});
static TAG: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"));
static HOST_PORT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?$",
    )
});
static SHA256_DIGEST: LazyLock<Regex> = LazyLock::new(|| re(r"^sha256:[0-9a-f]{64}$"));
static PLATFORM: LazyLock<Regex> = LazyLock::new(|| re(r"^linux/(?:amd64|arm64|ppc64le|s390x)$"));

/// A pip requirement as the catalog accepts it: a name, optional extras and
/// version specifiers. No URLs, markers, options or editable installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Normalised per PEP 503 (lowercase, runs of `-_.` become `-`).
    pub name: String,
    pub extras: Vec<String>,
    /// `(operator, version)` pairs in the order written.
    pub specifiers: Vec<(String, String)>,
}

impl Requirement {
    /// The line written to `requirements.txt`.
    pub fn to_line(&self) -> String {
        let mut s = self.name.clone();
        if !self.extras.is_empty() {
            s.push('[');
            s.push_str(&self.extras.join(","));
            s.push(']');
        }
        let specs: Vec<String> = self
            .specifiers
            .iter()
            .map(|(op, v)| format!("{op}{v}"))
            .collect();
        s.push_str(&specs.join(","));
        s
    }
}

/// PEP 503 normalisation of a project name.
pub fn normalize_pypi_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_sep {
                out.push('-');
            }
            in_sep = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_sep = false;
        }
    }
    out
}

const PIP_ALLOWED: &str =
    "allowed: a PyPI name with optional [extras] and PEP 440 specifiers, e.g. \"torch>=2.3,<2.5\"";

pub fn parse_requirement(s: &str) -> Result<Requirement, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("is empty".into());
    }
    if t.starts_with('-') {
        return Err(format!("is a pip option, not a package ({PIP_ALLOWED})"));
    }
    if t.contains("://") || t.contains('@') {
        return Err(format!("is a direct reference (URL or @); {PIP_ALLOWED}"));
    }
    if t.contains(';') {
        return Err(format!(
            "has an environment marker; markers are not allowed ({PIP_ALLOWED})"
        ));
    }
    if let Some(c) = t.chars().find(|c| !c.is_ascii() || c.is_ascii_control()) {
        return Err(format!(
            "contains the character {c:?}; only ASCII is allowed"
        ));
    }
    let name_end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .unwrap_or(t.len());
    let (name, mut rest) = t.split_at(name_end);
    if !PEP508_NAME.is_match(name) {
        return Err(format!(
            "is not a valid package name (PEP 508: letters, digits and . _ - inside); {PIP_ALLOWED}"
        ));
    }
    let mut extras = Vec::new();
    rest = rest.trim_start();
    if let Some(after) = rest.strip_prefix('[') {
        let Some(close) = after.find(']') else {
            return Err("has an unclosed [extras] list".into());
        };
        for extra in after[..close].split(',') {
            let extra = extra.trim();
            if !PEP508_NAME.is_match(extra) {
                return Err(format!("has an invalid extra {extra:?}"));
            }
            extras.push(normalize_pypi_name(extra));
        }
        rest = &after[close + 1..];
    }
    let rest = rest.trim();
    let mut specifiers = Vec::new();
    if !rest.is_empty() {
        for clause in rest.split(',') {
            let spec = parse_specifier(clause.trim())
                .ok_or_else(|| "is not a valid version specifier (PEP 440: e.g. \">=2.3,<2.5\", \"==2.4.*\", \"~=1.26\")".to_string())?;
            specifiers.push(spec);
        }
    }
    Ok(Requirement {
        name: normalize_pypi_name(name),
        extras,
        specifiers,
    })
}

fn parse_specifier(clause: &str) -> Option<(String, String)> {
    const OPS: [&str; 7] = ["===", "~=", "==", "!=", "<=", ">=", "<"];
    let op = OPS
        .iter()
        .chain(std::iter::once(&">"))
        .find(|op| clause.starts_with(**op))?;
    if *op == "===" {
        return None;
    }
    let version = clause[op.len()..].trim();
    let ok = match *op {
        "==" | "!=" => match version.strip_suffix(".*") {
            Some(prefix) => RELEASE_ONLY.is_match(prefix),
            None => PEP440_VERSION.is_match(version),
        },
        "~=" => {
            PEP440_VERSION.is_match(version)
                && !version.contains('+')
                && version
                    .split(|c: char| !c.is_ascii_digit() && c != '.')
                    .next()
                    .is_some_and(|release| {
                        release.split('.').filter(|p| !p.is_empty()).count() >= 2
                    })
        }
        _ => PEP440_VERSION.is_match(version) && !version.contains('+'),
    };
    ok.then(|| (op.to_string(), version.to_string()))
}

pub fn pip_requirement(s: &str) -> Result<(), String> {
    parse_requirement(s).map(|_| ())
}

/// A Debian package name, optionally pinned as `name=version`.
pub fn apt_package(s: &str) -> Result<(), String> {
    if s.starts_with('-') {
        return Err("is an apt option, not a package name (allowed: a Debian package name such as \"libgl1\" or \"libgl1=1.6.0-1\")".into());
    }
    let (name, version) = match s.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (s, None),
    };
    if !DEBIAN_NAME.is_match(name) {
        return Err("is not a valid Debian package name (policy 5.6.1: lowercase letters, digits and + - . , at least two characters, starting with a letter or digit)".into());
    }
    if let Some(v) = version
        && !DEBIAN_VERSION.is_match(v)
    {
        return Err(format!("has an invalid Debian version {v:?}"));
    }
    Ok(())
}

/// A conda package: `name` or `name<op>version`; channels belong in settings.
pub fn conda_package(s: &str) -> Result<(), String> {
    if s.contains("::") || s.contains('/') {
        return Err("names a channel; only package names (with an optional version) are allowed, channels are set in catalog.yaml".into());
    }
    let split = s.find(['=', '<', '>', '!']).unwrap_or(s.len());
    let (name, spec) = s.split_at(split);
    if !CONDA_NAME.is_match(name) {
        return Err(
            "is not a valid conda package name (lowercase letters, digits and _ . -)".into(),
        );
    }
    if !spec.is_empty() {
        let version = spec.trim_start_matches(['=', '<', '>', '!']);
        let op = &spec[..spec.len() - version.len()];
        if !matches!(op, "=" | "==" | ">=" | "<=" | ">" | "<" | "!=")
            || !CONDA_VERSION.is_match(version)
        {
            return Err(
                "has an invalid conda version spec (e.g. \"r-base=4.3\", \"cudatoolkit>=11.8\")"
                    .into(),
            );
        }
    }
    Ok(())
}

pub fn openvsx_id(s: &str) -> Result<(), String> {
    if OPENVSX_ID.is_match(s) {
        Ok(())
    } else {
        Err("is not an Open VSX extension id (publisher.name, optionally @x.y.z, e.g. \"ms-python.python\")".into())
    }
}

/// A Kubernetes label key: optional DNS-subdomain prefix and `/`, then a name.
pub fn k8s_label_key(s: &str) -> Result<(), String> {
    const WHY: &str = "is not a valid Kubernetes label key ([prefix/]name: a DNS subdomain of at most 253 characters, then a name of at most 63 alphanumerics, - _ .)";
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !DNS_SUBDOMAIN.is_match(p))
    {
        return Err(WHY.into());
    }
    if name.is_empty() || name.len() > 63 || !LABEL_NAME.is_match(name) {
        return Err(WHY.into());
    }
    Ok(())
}

pub fn k8s_label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || (s.len() <= 63 && LABEL_NAME.is_match(s)) {
        Ok(())
    } else {
        Err("is not a valid Kubernetes label value (at most 63 alphanumerics, - _ ., starting and ending with an alphanumeric)".into())
    }
}

/// Memory in the format KubeSpawner's ByteSpecification accepts.
pub fn memory(s: &str) -> Result<(), String> {
    if MEMORY.is_match(s) {
        return Ok(());
    }
    if s.ends_with('i') {
        return Err("uses a Kubernetes suffix that KubeSpawner rejects; write K, M, G or T (1024-based), e.g. \"8G\"".into());
    }
    Err("is not a memory size KubeSpawner accepts (a number of bytes, or a number with K, M, G or T, e.g. \"8G\" or \"512M\")".into())
}

/// Lowercase words joined by `-`: image names, variant values, slugs.
pub fn slug(s: &str) -> Result<(), String> {
    if s.len() <= 63 && SLUG.is_match(s) {
        Ok(())
    } else {
        Err("is not a valid name (lowercase letters and digits, words joined by single -, at most 63 characters)".into())
    }
}

/// Names of bases in catalog.yaml: like image names, dots allowed (`cuda-12.4-runtime`).
pub fn base_name(s: &str) -> Result<(), String> {
    if s.len() <= 63 && BASE_NAME.is_match(s) {
        Ok(())
    } else {
        Err("is not a valid base name (lowercase letters and digits, words joined by single - or ., e.g. \"cuda-12.4-runtime\")".into())
    }
}

/// Text shown in the spawner: KubeSpawner inserts it into the page unescaped.
pub fn no_html(s: &str) -> Result<(), String> {
    if s.contains(['<', '>']) {
        Err("contains < or >: KubeSpawner shows names and descriptions as unescaped HTML, so markup is not allowed".into())
    } else {
        Ok(())
    }
}

/// Variables a catalog may set (`env`, `build_args`): a valid name that does
/// not steer package managers, downloads, the loader or the runtime, so that
/// catalog text cannot change where packages come from or how they install.
pub fn settable_variable(s: &str) -> Result<(), String> {
    env_name(s)?;
    let upper = s.to_ascii_uppercase();
    const PREFIXES: &[&str] = &[
        "PIP_",
        "UV_",
        "PYTHON",
        "LD_",
        "CONDA_",
        "MAMBA_",
        "APT_",
        "DEBIAN_",
        "DPKG_",
        "NVIDIA_",
        "LABFORGE_",
        "CURL_",
        "SSL_",
        "GIT_",
        "NPM_",
        "NODE_",
        "JUPYTER",
        "BASH_",
        "CODE_SERVER",
    ];
    const NAMES: &[&str] = &[
        "PATH",
        "HOME",
        "USER",
        "SHELL",
        "ENV",
        "IFS",
        "REQUESTS_CA_BUNDLE",
        "VIRTUAL_ENV",
        "NB_USER",
        "NB_UID",
        "NB_GID",
        "BASE_IMAGE",
    ];
    if upper.ends_with("_PROXY")
        || PREFIXES.iter().any(|p| upper.starts_with(p))
        || NAMES.contains(&upper.as_str())
    {
        return Err("is reserved: it would change how packages are fetched or installed, or how the environment runs (PIP_*, PYTHON*, LD_*, *_PROXY, PATH, NVIDIA_*, LABFORGE_*, CODE_SERVER* and the like are set by the templates or the build configuration only)".into());
    }
    Ok(())
}

pub fn env_name(s: &str) -> Result<(), String> {
    if ENV_NAME.is_match(s) {
        Ok(())
    } else {
        Err("is not a valid environment variable name (letters, digits and _, not starting with a digit)".into())
    }
}

/// Keys of OCI image labels: reverse-DNS style.
pub fn oci_label_key(s: &str) -> Result<(), String> {
    if s.len() <= 128 && DNS_SUBDOMAIN.is_match(s) {
        Ok(())
    } else {
        Err("is not a valid image label key (reverse-DNS style: lowercase letters, digits, - and ., e.g. \"edu.example.course\")".into())
    }
}

/// An advisory id as waivers name it: `CVE-2024-1234`, `GHSA-xxxx-xxxx-xxxx`,
/// `PYSEC-2021-66`, `DSA-5678-1`, `USN-6000-1`, `OSV-2020-111`.
pub fn advisory_id(s: &str) -> Result<(), String> {
    let ok = (3..=64).contains(&s.len())
        && s.split_once('-').is_some_and(|(prefix, rest)| {
            !prefix.is_empty()
                && prefix.chars().all(|c| c.is_ascii_uppercase())
                && !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'))
        });
    if ok {
        Ok(())
    } else {
        Err("is not an advisory id (e.g. CVE-2024-1234, GHSA-xxxx-xxxx-xxxx, PYSEC-2021-66)".into())
    }
}

/// A package name as an image has it installed (dpkg, PyPI or conda name).
pub fn package_token(s: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'));
    if ok {
        Ok(())
    } else {
        Err("is not a package name (letters, digits, and - _ . +)".into())
    }
}

pub fn github_login(s: &str) -> Result<(), String> {
    if GITHUB_LOGIN.is_match(s) {
        Ok(())
    } else {
        Err("is not a GitHub login (letters, digits and single -, at most 39 characters)".into())
    }
}

pub fn group(s: &str) -> Result<(), String> {
    if GROUP.is_match(s) {
        Ok(())
    } else {
        Err(
            "is not a valid group name (letters, digits and . _ @ -, at most 128 characters)"
                .into(),
        )
    }
}

pub fn registry_host(s: &str) -> Result<(), String> {
    if HOST_PORT.is_match(s) {
        Ok(())
    } else {
        Err("is not a registry host (host or host:port, e.g. \"registry.example.edu\" or \"127.0.0.1:5000\")".into())
    }
}

pub fn repository_path(s: &str) -> Result<(), String> {
    if s.len() <= 200 && REPO_PATH.is_match(s) {
        Ok(())
    } else {
        Err("is not a valid repository path (lowercase components separated by /, e.g. \"labforge\" or \"ai/images\")".into())
    }
}

pub fn platform(s: &str) -> Result<(), String> {
    if PLATFORM.is_match(s) {
        Ok(())
    } else {
        Err(
            "is not a supported platform (linux/amd64, linux/arm64, linux/ppc64le or linux/s390x)"
                .into(),
        )
    }
}

/// An image reference: `[host[:port]/]path[:tag][@sha256:<64 hex>]`, with a tag or a digest.
pub fn image_reference(s: &str) -> Result<(), String> {
    const WHY: &str = "is not an image reference with a tag or digest (e.g. \"nvidia/cuda:12.4.1-runtime-ubuntu22.04\" or \"ubuntu@sha256:…\")";
    let (name_tag, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest
        && !SHA256_DIGEST.is_match(d)
    {
        return Err(WHY.into());
    }
    // The tag is after the last ':' that follows the last '/'.
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if tag.is_none() && digest.is_none() {
        return Err(format!(
            "{WHY}; a moving default like \"latest\" must be written out"
        ));
    }
    if let Some(t) = tag
        && !TAG.is_match(t)
    {
        return Err(WHY.into());
    }
    let (host, path) = match name.split_once('/') {
        Some((h, p)) if h.contains(['.', ':']) || h == "localhost" => (Some(h), p),
        _ => (None, name),
    };
    if host.is_some_and(|h| !HOST_PORT.is_match(h)) || !REPO_PATH.is_match(path) {
        return Err(WHY.into());
    }
    Ok(())
}

/// An image reference split into where to ask for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceParts {
    /// `host[:port]`; Docker Hub's API host for references without one.
    pub registry: String,
    /// With Docker Hub's `library/` for one-component names.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:…`
    pub digest: Option<String>,
}

/// Split a reference that [`image_reference`] accepts, the way Docker reads
/// it: no host means Docker Hub (`registry-1.docker.io`, `library/` for
/// official images).
pub fn split_reference(s: &str) -> Result<ReferenceParts, String> {
    image_reference(s)?;
    let (name_tag, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d.to_string())),
        None => (s, None),
    };
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(name_tag[last_slash + i + 1..].to_string()),
        ),
        None => (name_tag, None),
    };
    let (registry, repository) = match name.split_once('/') {
        Some((h, p)) if h.contains(['.', ':']) || h == "localhost" => {
            let h = if h == "docker.io" || h == "index.docker.io" {
                "registry-1.docker.io"
            } else {
                h
            };
            (h.to_string(), p.to_string())
        }
        _ => ("registry-1.docker.io".to_string(), name.to_string()),
    };
    let repository = if registry == "registry-1.docker.io" && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    Ok(ReferenceParts {
        registry,
        repository,
        tag,
        digest,
    })
}

/// A NVIDIA driver or CUDA version: dotted numbers.
pub fn dotted_version(s: &str) -> Result<(), String> {
    if RELEASE_ONLY.is_match(s) && !s.contains('!') {
        Ok(())
    } else {
        Err("is not a dotted version number (e.g. \"12.4.1\")".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_requirements() {
        for ok in [
            "numpy",
            "torch>=2.3,<2.5",
            "torch==2.4.*",
            "scikit-learn ~= 1.5",
            "jupyterlab==4.2.5",
            "transformers[torch]>=4.44",
            "Django!=4.0.0",
            "pkg==1.0rc1",
            "pkg>=1.0.post2.dev3",
            "pkg==1.0+local.1",
        ] {
            assert!(
                pip_requirement(ok).is_ok(),
                "{ok} should pass: {:?}",
                pip_requirement(ok)
            );
        }
        for bad in [
            "torch==2.*.1",
            "numpy; curl x|sh",
            "pkg @ https://evil.example/x.whl",
            "--index-url https://x",
            "-e .",
            "pkg~=1",
            "pkg>=1.0+local",
            "pkg===anything",
            "pkg>=",
            "nump\u{0443}",
            "_bad",
            "pkg[",
            "pkg 1.0",
        ] {
            assert!(pip_requirement(bad).is_err(), "{bad} should fail");
        }
        let r = parse_requirement("Scikit_Learn[Plot] >=1.5, <2").expect("valid");
        assert_eq!(r.to_line(), "scikit-learn[plot]>=1.5,<2");
    }

    #[test]
    fn debian_and_conda_and_openvsx() {
        assert!(apt_package("libgl1").is_ok());
        assert!(apt_package("g++").is_ok());
        assert!(apt_package("openjdk-17-jdk-headless=17.0.12+7-2~deb12u1").is_ok());
        assert!(apt_package("-oDPkg::Pre-Invoke=touch").is_err());
        assert!(apt_package("Vim").is_err());
        assert!(apt_package("x").is_err());
        assert!(conda_package("r-base=4.3").is_ok());
        assert!(conda_package("conda-forge::numpy").is_err());
        assert!(openvsx_id("ms-python.python").is_ok());
        assert!(openvsx_id("redhat.java@1.35.1").is_ok());
        assert!(openvsx_id("python").is_err());
    }

    #[test]
    fn kubernetes_and_kubespawner_formats() {
        assert!(k8s_label_key("nvidia.com/gpu.present").is_ok());
        assert!(k8s_label_key("node-role").is_ok());
        assert!(k8s_label_key("Nvidia.com/x").is_err());
        assert!(k8s_label_key("a/b/c").is_err());
        assert!(memory("8G").is_ok());
        assert!(memory("1.5T").is_ok());
        assert!(memory("8Gi").expect_err("Gi").contains("K, M, G or T"));
        assert!(memory("8GB").is_err());
    }

    #[test]
    fn image_references() {
        for ok in [
            "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04",
            "ubuntu:24.04",
            "127.0.0.1:5000/standin/debian:bookworm",
            "localhost/x:y",
            "ubuntu@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert!(image_reference(ok).is_ok(), "{ok}");
        }
        for bad in ["ubuntu", "Ubuntu:24.04", "ubuntu:", "x@sha256:12"] {
            assert!(image_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn references_split_like_docker() {
        let p = split_reference("nvidia/cuda:12.4.1-runtime-ubuntu22.04").expect("test value");
        assert_eq!(p.registry, "registry-1.docker.io");
        assert_eq!(p.repository, "nvidia/cuda");
        assert_eq!(p.tag.as_deref(), Some("12.4.1-runtime-ubuntu22.04"));
        let p = split_reference("ubuntu:22.04").expect("test value");
        assert_eq!(p.repository, "library/ubuntu");
        let d = format!("sha256:{}", "a".repeat(64));
        let p = split_reference(&format!("127.0.0.1:5000/standin/debian:bookworm@{d}"))
            .expect("test value");
        assert_eq!(p.registry, "127.0.0.1:5000");
        assert_eq!(p.repository, "standin/debian");
        assert_eq!(p.tag.as_deref(), Some("bookworm"));
        assert_eq!(p.digest.as_deref(), Some(d.as_str()));
        let p = split_reference("localhost/x@sha256:".to_string().as_str());
        assert!(p.is_err());
        assert!(split_reference("no-tag").is_err());
    }
}
