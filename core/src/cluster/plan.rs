//! What a sync has to do: the desired objects against the ones a label
//! selector listed.
//!
//! An object is unchanged when everything labforge sets is there with the
//! same value (the server adds defaults and status around it: those are
//! not differences) and it carries the hash of the body labforge would
//! apply now. A differing hash alone means labforge stopped setting a
//! field, which only a new apply removes. Listed objects that no desired
//! object names are deleted, but only those that carry this instance's
//! labels: anything else is never touched.

use serde::Serialize;
use serde_json::Value;

use super::{INSTANCE, Kind, MANAGED_BY, Object, applied_hash};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    Create,
    /// `fields`: the paths whose values differ, e.g.
    /// `.spec.template.spec.initContainers[name="pull-1-notebook"].image`.
    Update {
        fields: Vec<String>,
    },
    Unchanged,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub kind: Kind,
    pub name: String,
    #[serde(flatten)]
    pub action: Action,
    /// What to apply (create and update).
    #[serde(skip)]
    pub body: Option<Value>,
    /// The listed object's uid (a delete is conditional on it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// Said instead of a path when only the hash differs.
pub const REMOVED_FIELDS: &str = "(fields labforge no longer sets)";

/// The changes, desired objects first in their order, then deletes sorted
/// by kind and name.
pub fn plan(instance: &str, desired: &[Object], current: &[(Kind, Value)]) -> Vec<Change> {
    let mut changes = Vec::with_capacity(desired.len());
    for want in desired {
        let found = current
            .iter()
            .find(|(kind, body)| *kind == want.kind && name(body) == Some(want.name.as_str()));
        let (action, uid) = match found {
            None => (Action::Create, None),
            Some((_, have)) => {
                // Items of a list carry no apiVersion and kind: the list says them.
                let mut body = want.body.clone();
                if let Some(m) = body.as_object_mut() {
                    m.remove("apiVersion");
                    m.remove("kind");
                }
                let mut fields = Vec::new();
                differences(&body, have, &mut String::new(), &mut fields);
                fields.retain(|f| !f.contains(super::APPLIED_HASH));
                if fields.is_empty() && applied_hash(have) != want.applied_hash() {
                    fields.push(REMOVED_FIELDS.to_string());
                }
                let action = if fields.is_empty() {
                    Action::Unchanged
                } else {
                    Action::Update { fields }
                };
                (action, uid(have))
            }
        };
        let body =
            matches!(action, Action::Create | Action::Update { .. }).then(|| want.body.clone());
        changes.push(Change {
            kind: want.kind,
            name: want.name.clone(),
            action,
            body,
            uid,
        });
    }
    let mut stale: Vec<Change> = current
        .iter()
        .filter(|(kind, body)| {
            let n = name(body);
            owned_by(body, instance)
                && !desired
                    .iter()
                    .any(|d| d.kind == *kind && Some(d.name.as_str()) == n)
        })
        .filter_map(|(kind, body)| {
            Some(Change {
                kind: *kind,
                name: name(body)?.to_string(),
                action: Action::Delete,
                body: None,
                uid: uid(body),
            })
        })
        .collect();
    stale.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    changes.extend(stale);
    changes
}

/// `metadata.name` of any object.
pub fn name(body: &Value) -> Option<&str> {
    body.pointer("/metadata/name").and_then(Value::as_str)
}

/// `metadata.uid` of any object.
pub fn uid(body: &Value) -> Option<String> {
    body.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Whether an object carries the labels of `instance`'s own objects.
pub fn owned_by(body: &Value, instance: &str) -> bool {
    let label = |key: &str| {
        body.pointer("/metadata/labels")
            .and_then(|l| l.get(key))
            .and_then(Value::as_str)
    };
    label(MANAGED_BY) == Some("labforge") && label(INSTANCE) == Some(instance)
}

/// Paths where `have` lacks or differs from what `want` sets. Maps: every
/// key of `want`; lists: the same length, element by element (matched by
/// `name` where every element has one, in any order: the API server keeps
/// such lists as maps); anything else: equal.
pub fn differences(want: &Value, have: &Value, path: &mut String, out: &mut Vec<String>) {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => {
            for (key, wv) in w {
                let len = path.len();
                path.push('.');
                path.push_str(key);
                match h.get(key) {
                    Some(hv) => differences(wv, hv, path, out),
                    None => out.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        // A list of named items (containers, env, volumes) is a map keyed
        // by name to the API server, which need not keep the applied order
        // (server-side apply merges by key): items are matched by name.
        (Value::Array(w), Value::Array(h))
            if w.len() == h.len() && !w.is_empty() && w.iter().all(|v| name_of(v).is_some()) =>
        {
            for wv in w {
                let n = name_of(wv).unwrap_or_default();
                let len = path.len();
                path.push_str(&format!("[name={n:?}]"));
                match h.iter().find(|hv| name_of(hv) == Some(n)) {
                    Some(hv) => differences(wv, hv, path, out),
                    None => out.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        (Value::Array(w), Value::Array(h)) if w.len() == h.len() => {
            for (i, (wv, hv)) in w.iter().zip(h).enumerate() {
                let len = path.len();
                match wv.get("name").and_then(Value::as_str) {
                    Some(n) => path.push_str(&format!("[name={n:?}]")),
                    None => path.push_str(&format!("[{i}]")),
                }
                differences(wv, hv, path, out);
                path.truncate(len);
            }
        }
        (w, h) if w == h => {}
        _ => out.push(if path.is_empty() {
            ".".to_string()
        } else {
            path.clone()
        }),
    }
}

/// The `name` of a list item, if it has one.
fn name_of(v: &Value) -> Option<&str> {
    v.get("name").and_then(Value::as_str)
}
