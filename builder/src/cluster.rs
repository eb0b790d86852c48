//! The Kubernetes API, through kube-rs: the one module that talks to a
//! cluster. Reads, server-side applies and deletes the objects the hub
//! keeps in sync (the profiles ConfigMap, the pre-puller DaemonSets) and the
//! build Jobs, with retries on transient errors.
//!
//! Must not decide what the objects look like: that is `labforge_core::cluster`
//! (pure). [`PERMISSIONS`] lists every call made here; the shipped Role in
//! `deploy/` grants exactly these and a test holds the two together.

/// One rule of the hub's namespaced Role: the verbs used on one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// `""` for the core group.
    pub api_group: &'static str,
    /// Plural resource name, with a subresource after a `/` (`pods/log`).
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

/// Every verb on every resource this module uses, and nothing else.
/// Secrets are absent on purpose: the hub reads its own Secret through
/// the environment and volumes the kubelet mounts, never through the API.
pub const PERMISSIONS: &[Permission] = &[
    Permission {
        api_group: "",
        resource: "configmaps",
        verbs: &["get", "list", "create", "patch", "delete"],
    },
    Permission {
        api_group: "apps",
        resource: "daemonsets",
        verbs: &["get", "list", "create", "patch", "delete"],
    },
    Permission {
        api_group: "batch",
        resource: "jobs",
        verbs: &["get", "list", "create", "delete"],
    },
    Permission {
        api_group: "",
        resource: "pods",
        verbs: &["get", "list"],
    },
    Permission {
        api_group: "",
        resource: "pods/log",
        verbs: &["get"],
    },
];
