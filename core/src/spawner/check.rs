//! The contract check of a `profile_list` document.
//!
//! An independent reading of `SPAWNER-CONTRACT` (KubeSpawner 7.1.0, §1, §4,
//! §7, §8) over plain JSON: it shares no logic with the builder, so a bug
//! there is caught here rather than repeated. It reports every violation,
//! not just the first. Must not depend on the catalog or on how the list
//! was made.
//!
//! An empty list is accepted (a viewer may see no profile; KubeSpawner then
//! shows none and spawns the hub's default image).

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;
use serde_json::{Map, Value};

/// One broken rule: where (`[3].profile_options.version.choices`) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every way `list` breaks KubeSpawner's `profile_list` contract.
pub fn check(list: &serde_json::Value) -> Vec<Violation> {
    let mut c = Checker::default();
    let Some(items) = list.as_array() else {
        c.report(
            "",
            format!(
                "the profile list must be a JSON array of profiles, not {}",
                kind(list)
            ),
        );
        return c.found;
    };
    let mut slugs: HashSet<&str> = HashSet::new();
    let mut defaults: Vec<usize> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("[{i}]");
        let Some(profile) = item.as_object() else {
            c.report(
                &path,
                format!("a profile must be an object, not {}", kind(item)),
            );
            continue;
        };
        c.profile(&path, profile);
        if let Some(Value::String(slug)) = profile.get("slug")
            && !slugs.insert(slug)
        {
            c.report(
                &format!("{path}.slug"),
                format!("{slug:?} is used by an earlier profile; slugs must be unique"),
            );
        }
        if profile.get("default") == Some(&Value::Bool(true)) {
            defaults.push(i);
        }
    }
    if !items.is_empty() {
        match defaults.as_slice() {
            [] => c.report(
                "",
                "no profile has \"default\": true; mark exactly one profile as the default",
            ),
            [_] => {}
            [_, rest @ ..] => {
                for i in rest {
                    c.report(
                        &format!("[{i}].default"),
                        "a second profile has \"default\": true; exactly one profile may be the default",
                    );
                }
            }
        }
    }
    c.found
}

/// KubeSpawner traits an override may set (a typo'd scalar key is silently
/// ignored by KubeSpawner, so anything else is reported).
const TRAITS: &[&str] = &[
    "image",
    "image_pull_policy",
    "cpu_limit",
    "cpu_guarantee",
    "mem_limit",
    "mem_guarantee",
    "extra_resource_limits",
    "extra_resource_guarantees",
    "node_selector",
    "tolerations",
    "environment",
    "volumes",
    "volume_mounts",
    "extra_labels",
    "extra_annotations",
    "default_url",
    "cmd",
    "args",
    "node_affinity_required",
    "node_affinity_preferred",
    "extra_pod_config",
    "extra_container_config",
    "image_pull_secrets",
    "lifecycle_hooks",
    "init_containers",
    "working_dir",
    "uid",
    "gid",
    "fs_gid",
    "supplemental_gids",
    "service_account",
    "start_timeout",
    "http_timeout",
];

const PROFILE_KEYS: &[&str] = &[
    "display_name",
    "slug",
    "description",
    "default",
    "kubespawner_override",
    "profile_options",
];

const TOLERATION_KEYS: &[&str] = &["key", "operator", "value", "effect", "tolerationSeconds"];

/// The fields KubeSpawner's template expansion knows (`{username}` …):
/// anything else in single braces is a `KeyError` at spawn.
const TEMPLATE_FIELDS: &[&str] = &[
    "userid",
    "username",
    "unescaped_username",
    "escaped_username",
    "safe_username",
    "legacy_escape_username",
    "servername",
    "unescaped_servername",
    "escaped_servername",
    "safe_servername",
    "legacy_escaped_servername",
    "user_server",
    "unescaped_user_server",
    "escaped_user_server",
    "safe_user_server",
    "legacy_escaped_user_server",
    "pod_name",
    "pvc_name",
    "namespace",
];

/// Word parts of an environment variable name that suggest a secret.
const SECRET_WORDS: &[&str] = &[
    "TOKEN", "TOKENS", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "KEY", "KEYS", "APIKEY",
];

static SLUG: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"));
static PINNED: LazyLock<Regex> = LazyLock::new(|| re(r"^[^\s@]+@sha256:[0-9a-f]{64}$"));
static MEMORY: LazyLock<Regex> = LazyLock::new(|| re(r"^[0-9]+(\.[0-9]+)?[KMGT]$"));
static ENTITY: LazyLock<Regex> =
    LazyLock::new(|| re(r"^&(amp|lt|gt|quot|#39|#[0-9]+|#x[0-9a-fA-F]+);"));

/// The patterns above are constants, checked by the tests.
fn re(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("bad built-in pattern {pattern:?}: {e}"))
}

#[derive(Default)]
struct Checker {
    found: Vec<Violation>,
}

impl Checker {
    fn report(&mut self, path: &str, message: impl Into<String>) {
        self.found.push(Violation {
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn profile(&mut self, path: &str, p: &Map<String, Value>) {
        for key in p.keys() {
            if !PROFILE_KEYS.contains(&key.as_str()) {
                self.report(
                    &at(path, key),
                    format!(
                        "unknown profile key {key:?} (KubeSpawner ignores it); use one of {}",
                        PROFILE_KEYS.join(", ")
                    ),
                );
            }
        }
        match p.get("display_name") {
            None => self.report(
                &at(path, "display_name"),
                "missing; every profile needs a display_name",
            ),
            Some(v) => self.display_text(&at(path, "display_name"), v, true),
        }
        match p.get("slug") {
            None => self.report(
                &at(path, "slug"),
                "missing; give every profile an explicit, stable slug",
            ),
            Some(Value::String(s)) if SLUG.is_match(s) => {}
            Some(v) => self.report(
                &at(path, "slug"),
                format!("{} is not a slug of [a-z0-9-]", short(v)),
            ),
        }
        if let Some(v) = p.get("description") {
            self.display_text(&at(path, "description"), v, false);
        }
        if let Some(v) = p.get("default")
            && !v.is_boolean()
        {
            self.report(
                &at(path, "default"),
                format!(
                    "{} must be a JSON boolean (KubeSpawner tests truthiness, fancy-profiles tests === true)",
                    short(v)
                ),
            );
        }
        let empty = Map::new();
        let profile_override = match p.get("kubespawner_override") {
            None => &empty,
            Some(Value::Object(o)) => {
                self.overrides(&at(path, "kubespawner_override"), o, &empty);
                o
            }
            Some(v) => {
                self.report(
                    &at(path, "kubespawner_override"),
                    format!("must be an object of trait names, not {}", kind(v)),
                );
                &empty
            }
        };
        let mut image_from_option = false;
        match p.get("profile_options") {
            None => {}
            Some(Value::Object(options)) => {
                for (key, option) in options {
                    let opath = at(&at(path, "profile_options"), key);
                    if self.option(&opath, key, option, profile_override) {
                        image_from_option = true;
                    }
                }
            }
            Some(v) => self.report(
                &at(path, "profile_options"),
                format!("must be an object of options, not {}", kind(v)),
            ),
        }
        if !profile_override.contains_key("image") && !image_from_option {
            self.report(
                path,
                "no image: set kubespawner_override.image, or image on every choice of an option",
            );
        }
    }

    /// Checks one option; true when every one of its choices sets `image`.
    fn option(
        &mut self,
        path: &str,
        key: &str,
        option: &Value,
        profile_override: &Map<String, Value>,
    ) -> bool {
        if !SLUG.is_match(key) {
            self.report(
                path,
                format!("option key {key:?} is not [a-z0-9-] (it is used in form field and pre-puller names)"),
            );
        } else if key == "profile" {
            self.report(
                path,
                "an option may not be keyed \"profile\": it collides with the profile slug in user_options",
            );
        }
        let Some(option) = option.as_object() else {
            self.report(
                path,
                format!("an option must be an object, not {}", kind(option)),
            );
            return false;
        };
        match option.get("display_name") {
            None => self.report(
                &at(path, "display_name"),
                "missing; every option needs a display_name",
            ),
            Some(v) => self.display_text(&at(path, "display_name"), v, false),
        }
        let unlisted_enabled = match option.get("unlisted_choice") {
            None => false,
            Some(Value::Object(u)) => {
                let upath = at(path, "unlisted_choice");
                match u.get("enabled") {
                    None | Some(Value::Bool(_)) => {}
                    Some(v) => self.report(
                        &at(&upath, "enabled"),
                        format!("{} must be a JSON boolean", short(v)),
                    ),
                }
                if let Some(Value::Object(o)) = u.get("kubespawner_override") {
                    self.trait_names(&at(&upath, "kubespawner_override"), o);
                }
                u.get("enabled") == Some(&Value::Bool(true))
            }
            Some(v) => {
                self.report(
                    &at(path, "unlisted_choice"),
                    format!("must be an object, not {}", kind(v)),
                );
                false
            }
        };
        let cpath = at(path, "choices");
        let choices = match option.get("choices") {
            Some(Value::Object(choices)) => choices,
            None => {
                self.report(
                    &cpath,
                    "missing; always send choices (even {}): KubeSpawner's form and fancy-profiles need it",
                );
                return false;
            }
            Some(v) => {
                self.report(
                    &cpath,
                    format!("must be an object of choices, not {}", kind(v)),
                );
                return false;
            }
        };
        if choices.is_empty() && !unlisted_enabled {
            self.report(
                &cpath,
                "no choices and no enabled unlisted_choice: KubeSpawner cannot pick a default",
            );
        }
        let mut defaults = 0;
        let mut all_have_image = !choices.is_empty();
        for (ckey, choice) in choices {
            let chpath = at(&cpath, ckey);
            if !SLUG.is_match(ckey) {
                self.report(
                    &chpath,
                    format!("choice key {ckey:?} is not [a-z0-9-] (it is used in form values and pre-puller names)"),
                );
            }
            let Some(choice) = choice.as_object() else {
                self.report(
                    &chpath,
                    format!("a choice must be an object, not {}", kind(choice)),
                );
                all_have_image = false;
                continue;
            };
            match choice.get("display_name") {
                None => self.report(
                    &at(&chpath, "display_name"),
                    "missing; every choice needs a display_name",
                ),
                Some(v) => self.display_text(&at(&chpath, "display_name"), v, false),
            }
            if let Some(v) = choice.get("description") {
                self.display_text(&at(&chpath, "description"), v, false);
            }
            match choice.get("default") {
                None => {}
                Some(Value::Bool(true)) => {
                    defaults += 1;
                    if defaults > 1 {
                        self.report(
                            &at(&chpath, "default"),
                            "a second choice of this option is the default; at most one may be",
                        );
                    }
                }
                Some(Value::Bool(false)) => {}
                Some(v) => self.report(
                    &at(&chpath, "default"),
                    format!("{} must be a JSON boolean", short(v)),
                ),
            }
            match choice.get("kubespawner_override") {
                None => all_have_image = false,
                Some(Value::Object(o)) => {
                    self.overrides(&at(&chpath, "kubespawner_override"), o, profile_override);
                    all_have_image &= o.contains_key("image");
                }
                Some(v) => {
                    self.report(
                        &at(&chpath, "kubespawner_override"),
                        format!("must be an object of trait names, not {}", kind(v)),
                    );
                    all_have_image = false;
                }
            }
        }
        all_have_image
    }

    /// A display string: a string (non-empty if `required`) that is safe to
    /// put into HTML unescaped.
    fn display_text(&mut self, path: &str, v: &Value, required: bool) {
        let Value::String(s) = v else {
            self.report(path, format!("must be a string, not {}", kind(v)));
            return;
        };
        if required && s.trim().is_empty() {
            self.report(path, "must not be empty");
        }
        if let Some(why) = html_unsafe(s) {
            self.report(
                path,
                format!(
                    "{s:?} is not HTML-safe ({why}); KubeSpawner puts it into the page unescaped"
                ),
            );
        }
    }

    fn trait_names(&mut self, path: &str, o: &Map<String, Value>) {
        for key in o.keys() {
            if !TRAITS.contains(&key.as_str()) {
                self.report(
                    &at(path, key),
                    format!(
                        "{key:?} is not a known KubeSpawner trait (a typo is silently ignored)"
                    ),
                );
            }
        }
    }

    /// One `kubespawner_override`; `base` is the profile's own override
    /// when this is a choice's (for the limits a guarantee needs).
    fn overrides(&mut self, path: &str, o: &Map<String, Value>, base: &Map<String, Value>) {
        self.trait_names(path, o);
        for (key, v) in o {
            let p = at(path, key);
            match key.as_str() {
                "image" => match v {
                    Value::String(s) if PINNED.is_match(s) => {}
                    Value::String(s) => self.report(
                        &p,
                        format!("{s:?} is not pinned by digest; use repo:tag@sha256:<64 lowercase hex>"),
                    ),
                    _ => self.report(&p, format!("must be a string, not {}", kind(v))),
                },
                "image_pull_policy" => match v {
                    Value::Null => {}
                    Value::String(s) if ["Always", "IfNotPresent", "Never"].contains(&s.as_str()) => {}
                    _ => self.report(
                        &p,
                        format!("{} is not Always, IfNotPresent, Never or null", short(v)),
                    ),
                },
                "cpu_limit" | "cpu_guarantee" => match v {
                    Value::Null => {}
                    Value::Number(n) if n.as_f64().is_some_and(|f| f >= 0.0) => {}
                    _ => self.report(
                        &p,
                        format!("{} must be a JSON number of cores >= 0 (a string is a TraitError)", short(v)),
                    ),
                },
                "mem_limit" | "mem_guarantee" => match v {
                    Value::Null => {}
                    Value::Number(n) if n.is_u64() => {}
                    Value::String(s) if MEMORY.is_match(s) => {}
                    _ => self.report(
                        &p,
                        format!("{} must be bytes or \"<n>K|M|G|T\" (\"Gi\" suffixes are a TraitError)", short(v)),
                    ),
                },
                "extra_resource_limits" => self.resources(&p, v, None),
                "extra_resource_guarantees" => {
                    let mut limits = Map::new();
                    for src in [base.get("extra_resource_limits"), o.get("extra_resource_limits")]
                        .into_iter()
                        .flatten()
                    {
                        if let Value::Object(m) = src {
                            limits.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
                        }
                    }
                    self.resources(&p, v, Some(&limits));
                }
                "node_selector" => self.strings(&p, v, false, true),
                "extra_labels" | "extra_annotations" => self.strings(&p, v, true, false),
                "tolerations" => self.tolerations(&p, v),
                "environment" => self.environment(&p, v),
                "volumes" | "volume_mounts" => match v {
                    Value::Object(m) => {
                        for (name, item) in m {
                            if !item.is_object() && !item.is_null() {
                                self.report(
                                    &at(&p, name),
                                    format!("must be an object, not {}", kind(item)),
                                );
                            }
                            self.braces(&at(&p, name), item);
                        }
                    }
                    Value::Array(_) => self.report(
                        &p,
                        "a list replaces the hub's volumes (dropping the home volume); key them by volume name in an object",
                    ),
                    _ => self.report(&p, format!("must be an object keyed by name, not {}", kind(v))),
                },
                "image_pull_secrets" => self.report(
                    &p,
                    "the list is sent to the browser; set image_pull_secrets in the hub configuration, not in a profile",
                ),
                _ => {}
            }
        }
    }

    /// `extra_resource_*`: extended resources (`vendor/name`, e.g. GPUs) in
    /// whole numbers, others as quantities; with `limits` (for guarantees),
    /// every extended resource must also be limited to the same amount.
    fn resources(&mut self, path: &str, v: &Value, limits: Option<&Map<String, Value>>) {
        let Value::Object(m) = v else {
            self.report(
                path,
                format!("must be an object of resources, not {}", kind(v)),
            );
            return;
        };
        for (name, amount) in m {
            let p = at(path, name);
            let whole = whole_number(amount);
            let extended = name.contains('/');
            if extended && whole.is_none() {
                self.report(
                    &p,
                    format!("{} must be a whole number (Kubernetes rejects fractional extended resources)", short(amount)),
                );
                continue;
            }
            if !amount.is_string() && !amount.is_number() {
                self.report(&p, format!("must be a quantity, not {}", kind(amount)));
            }
            if let Some(limits) = limits
                && extended
            {
                let limit = limits.get(name).and_then(whole_number);
                if limit.is_none() {
                    self.report(
                        &p,
                        format!("{name} is guaranteed but not limited; Kubernetes rejects it (put it in extra_resource_limits)"),
                    );
                } else if limit != whole {
                    self.report(
                        &p,
                        format!("{name} is guaranteed {} but limited {}; Kubernetes requires them equal", short(amount), short(limits.get(name).unwrap_or(&Value::Null))),
                    );
                }
            }
        }
    }

    /// An object of strings (`null` allowed where it deletes a merged key).
    fn strings(&mut self, path: &str, v: &Value, templated: bool, null_ok: bool) {
        let Value::Object(m) = v else {
            self.report(
                path,
                format!("must be an object of strings, not {}", kind(v)),
            );
            return;
        };
        for (k, item) in m {
            let p = at(path, k);
            match item {
                Value::String(s) if templated => self.brace_text(&p, s),
                Value::String(_) => {}
                Value::Null if null_ok => {}
                _ => self.report(&p, format!("must be a string, not {}", kind(item))),
            }
        }
    }

    fn tolerations(&mut self, path: &str, v: &Value) {
        match v {
            Value::Array(items) => {
                for (i, t) in items.iter().enumerate() {
                    self.toleration(&format!("{path}[{i}]"), t);
                }
            }
            Value::Object(m) => {
                for (name, t) in m {
                    self.toleration(&at(path, name), t);
                }
            }
            _ => self.report(
                path,
                format!(
                    "must be a list of tolerations (or an object keyed by name), not {}",
                    kind(v)
                ),
            ),
        }
    }

    fn toleration(&mut self, path: &str, t: &Value) {
        let Value::Object(m) = t else {
            self.report(
                path,
                format!("a toleration must be an object, not {}", kind(t)),
            );
            return;
        };
        for (k, v) in m {
            let p = at(path, k);
            match k.as_str() {
                "key" | "value" if !v.is_string() => {
                    self.report(&p, format!("must be a string, not {}", kind(v)));
                }
                "operator" if !matches!(v.as_str(), Some("Equal" | "Exists")) => {
                    self.report(&p, format!("{} is not Equal or Exists", short(v)));
                }
                "effect"
                    if !matches!(
                        v.as_str(),
                        Some("NoSchedule" | "PreferNoSchedule" | "NoExecute")
                    ) =>
                {
                    self.report(
                        &p,
                        format!(
                            "{} is not NoSchedule, PreferNoSchedule or NoExecute",
                            short(v)
                        ),
                    );
                }
                "tolerationSeconds" if !(v.is_i64() || v.is_u64()) => {
                    self.report(
                        &p,
                        format!("{} must be a whole number of seconds", short(v)),
                    );
                }
                k if !TOLERATION_KEYS.contains(&k) => self.report(
                    &p,
                    format!(
                        "{k:?} is not a toleration field (camelCase: {}); the pod cannot be built",
                        TOLERATION_KEYS.join(", ")
                    ),
                ),
                _ => {}
            }
        }
        if m.get("operator").and_then(Value::as_str) == Some("Exists") && m.contains_key("value") {
            self.report(
                &at(path, "value"),
                "a toleration with operator Exists must not have a value",
            );
        }
    }

    fn environment(&mut self, path: &str, v: &Value) {
        let Value::Object(m) = v else {
            self.report(
                path,
                format!("must be an object of variables, not {}", kind(v)),
            );
            return;
        };
        for (name, value) in m {
            let p = at(path, name);
            if looks_secret(name) {
                self.report(
                    &p,
                    format!("{name} looks like a secret, and the list is sent to the browser; set it in the hub configuration or from a Kubernetes Secret"),
                );
            }
            match value {
                Value::String(s) => self.brace_text(&p, s),
                Value::Object(_) | Value::Null => {}
                _ => self.report(
                    &p,
                    format!(
                        "must be a string (or an EnvVar object), not {}",
                        kind(value)
                    ),
                ),
            }
        }
    }

    /// Every string inside `v` must be safe for template expansion.
    fn braces(&mut self, path: &str, v: &Value) {
        match v {
            Value::String(s) => self.brace_text(path, s),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.braces(&format!("{path}[{i}]"), item);
                }
            }
            Value::Object(m) => {
                for (k, item) in m {
                    self.braces(&at(path, k), item);
                }
            }
            _ => {}
        }
    }

    fn brace_text(&mut self, path: &str, s: &str) {
        if let Some(why) = unescaped_brace(s) {
            self.report(
                path,
                format!("{s:?}: {why}; KubeSpawner format-expands it (write {{{{ and }}}} for literal braces)"),
            );
        }
    }
}

/// `path.key`, or `path["key"]` when the key is not a plain word.
fn at(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (plain, path.is_empty()) {
        (true, true) => key.to_string(),
        (true, false) => format!("{path}.{key}"),
        (false, _) => format!("{path}[{key:?}]"),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A value for a message, cut short.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// Why `s` is not safe as raw HTML, if it is not.
fn html_unsafe(s: &str) -> Option<&'static str> {
    for (i, c) in s.char_indices() {
        match c {
            '<' | '>' => return Some("raw < or >"),
            '"' => return Some("raw double quote"),
            '&' if !ENTITY.is_match(&s[i..]) => return Some("& that is not an entity"),
            _ => {}
        }
    }
    None
}

/// The count in `v` when it is a whole number (an unsigned integer or a
/// string of digits).
fn whole_number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    }
}

/// Whether an environment variable name has a secret-like word part
/// (`GITHUB_TOKEN`, `AWS_SECRET_ACCESS_KEY`, `DB_PASSWORD`).
fn looks_secret(name: &str) -> bool {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|part| SECRET_WORDS.contains(&part.to_ascii_uppercase().as_str()))
}

/// Why `s` would break Python's `str.format` with KubeSpawner's fields.
fn unescaped_brace(s: &str) -> Option<String> {
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                chars.next();
            }
            '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                chars.next();
            }
            '{' => {
                let rest = &s[i + 1..];
                let Some(end) = rest.find('}') else {
                    return Some("a single { without a closing }".to_string());
                };
                let field = &rest[..end];
                if !TEMPLATE_FIELDS.contains(&field) {
                    return Some(format!("{{{field}}} is not a field KubeSpawner expands"));
                }
                for _ in 0..=field.chars().count() {
                    chars.next();
                }
            }
            '}' => return Some("a single } without an opening {".to_string()),
            _ => {}
        }
    }
    None
}
