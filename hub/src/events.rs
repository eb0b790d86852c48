//! The registry's notifications (CNCF distribution's `notifications`
//! endpoints, envelope media type
//! `application/vnd.docker.distribution.events.v1+json`): a push or delete
//! of a manifest in a repository of the catalog makes the hub load again,
//! so a deleted digest leaves the profiles without waiting for the next
//! periodic check. Parsing is pure; the handler is in [`crate::api`].

use serde::Deserialize;

/// The envelope distribution posts.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    pub events: Vec<Event>,
}

#[derive(Debug, Deserialize)]
pub struct Event {
    #[serde(default)]
    pub id: String,
    /// `push`, `pull`, `delete`, `mount`.
    pub action: String,
    #[serde(default)]
    pub target: Target,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    #[serde(default)]
    pub media_type: String,
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub repository: String,
    #[serde(default)]
    pub tag: String,
}

/// What a notification means for the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relevant {
    pub action: String,
    pub repository: String,
    pub digest: String,
}

/// Manifest media types whose push or delete can change what is served.
const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Parse an envelope and keep the events that can change the catalog:
/// manifest pushes and deletes (a delete names no media type). Pulls,
/// mounts and blob events are ignored.
pub fn relevant(body: &[u8]) -> Result<Vec<Relevant>, serde_json::Error> {
    let envelope: Envelope = serde_json::from_slice(body)?;
    Ok(envelope
        .events
        .into_iter()
        .filter(|e| match e.action.as_str() {
            "push" => MANIFEST_TYPES.contains(&e.target.media_type.as_str()),
            "delete" => true,
            _ => false,
        })
        .map(|e| Relevant {
            action: e.action,
            repository: e.target.repository,
            digest: e.target.digest,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An envelope as distribution 2.8 sends it (fields from its
    /// notifications documentation), with a blob push, a manifest push, a
    /// pull and a manifest delete.
    const ENVELOPE: &str = r#"{"events":[
      {"id":"a1","timestamp":"2026-11-26T07:00:00Z","action":"push",
       "target":{"mediaType":"application/octet-stream","size":1024,"digest":"sha256:aa","length":1024,"repository":"labforge/notebook","url":"http://127.0.0.1:5000/v2/labforge/notebook/blobs/sha256:aa"},
       "request":{"id":"r1","addr":"127.0.0.1:5555","host":"127.0.0.1:5000","method":"PUT","useragent":"labforge/0.1.0"},
       "actor":{},"source":{"addr":"host:5000","instanceID":"i1"}},
      {"id":"a2","timestamp":"2026-11-26T07:00:01Z","action":"push",
       "target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":812,"digest":"sha256:bb","length":812,"repository":"labforge/notebook","url":"http://127.0.0.1:5000/v2/labforge/notebook/manifests/sha256:bb","tag":"minimal-cpu"},
       "request":{"id":"r2","addr":"127.0.0.1:5555","host":"127.0.0.1:5000","method":"PUT","useragent":"labforge/0.1.0"},
       "actor":{},"source":{"addr":"host:5000","instanceID":"i1"}},
      {"id":"a3","timestamp":"2026-11-26T07:00:02Z","action":"pull",
       "target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:bb","repository":"labforge/notebook"},
       "request":{"method":"GET"},"actor":{},"source":{}},
      {"id":"a4","timestamp":"2026-11-26T07:00:03Z","action":"delete",
       "target":{"digest":"sha256:cc","repository":"labforge/grading"},
       "request":{"method":"DELETE"},"actor":{},"source":{}}
    ]}"#;

    #[test]
    fn keeps_manifest_pushes_and_deletes() {
        let got = relevant(ENVELOPE.as_bytes()).expect("parses");
        assert_eq!(
            got,
            [
                Relevant {
                    action: "push".into(),
                    repository: "labforge/notebook".into(),
                    digest: "sha256:bb".into()
                },
                Relevant {
                    action: "delete".into(),
                    repository: "labforge/grading".into(),
                    digest: "sha256:cc".into()
                },
            ]
        );
    }

    #[test]
    fn malformed_envelopes_are_errors() {
        assert!(relevant(b"{}").is_err());
        assert!(relevant(b"not json").is_err());
        assert!(relevant(br#"{"events":[{"target":{}}]}"#).is_err());
        assert_eq!(relevant(br#"{"events":[]}"#).expect("empty is fine"), []);
    }
}
