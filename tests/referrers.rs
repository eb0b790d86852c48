//! SBOMs and scan reports attached to images as OCI referrers in the real
//! local registry (the CNCF distribution 2.8 that scripts/services.sh
//! starts, which has no referrers API, so the referrers tag schema is what
//! holds the lists), and in registries these tests start themselves (one
//! that wants a login). Subject images are put with curl, and what
//! labforge wrote is read back with curl and skopeo as well, so the checks
//! do not rest on labforge's own reading. A missing registry fails these
//! tests; they are never skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use labforge_builder::RegistryOptions;
use labforge_builder::scan::referrers::{
    CREATED_ANNOTATION, REPORT_ARTIFACT_TYPE, Referrers, ReferrersError, SBOM_ARTIFACT_TYPE,
    tag_for,
};
use labforge_core::identity::sha256_hex;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
/// The login in registry-config/htpasswd.example.
const USER: &str = "labforge";
const PASSWORD: &str = "labforge-example";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn registry_addr() -> String {
    let addr = std::env::var("LABFORGE_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    assert!(
        TcpStream::connect(&addr).is_ok(),
        "no registry at {addr}: run `bash scripts/services.sh` (the README's test command does)"
    );
    addr
}

/// Something unique per test and run.
fn unique(what: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{what}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// An HTTP answer read by curl.
struct Answer {
    status: u16,
    /// Header lines, names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Run curl (`-i`), optionally with a request body, and split its answer.
fn curl(args: &[&str], body: Option<&[u8]>) -> Answer {
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    let mut command = Command::new("curl");
    command.args(["-s", "-S", "-i"]).args(args);
    if let Some(b) = body {
        std::fs::write(file.path(), b).expect("write body");
        command
            .arg("--data-binary")
            .arg(format!("@{}", file.path().display()));
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("curl is required (scripts/services.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rest: &[u8] = &out.stdout;
    loop {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP answer");
        let head = String::from_utf8_lossy(&rest[..end]).to_string();
        rest = &rest[end + 4..];
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        if status == 100 {
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        return Answer {
            status,
            headers,
            body: rest.to_vec(),
        };
    }
}

/// A registry and, when it wants one, the `user:password` to give curl.
struct Target<'a> {
    addr: &'a str,
    login: Option<&'a str>,
}

impl Target<'_> {
    fn args<'s>(&'s self, more: &[&'s str]) -> Vec<&'s str> {
        let mut args = Vec::new();
        if let Some(l) = self.login {
            args.extend(["-u", l]);
        }
        args.extend_from_slice(more);
        args
    }

    /// Upload a blob (POST, then PUT with the digest); returns its digest.
    fn put_blob(&self, repository: &str, bytes: &[u8]) -> String {
        let digest = digest_of(bytes);
        let start = format!("http://{}/v2/{repository}/blobs/uploads/", self.addr);
        let answer = curl(&self.args(&["-X", "POST", &start]), None);
        assert_eq!(
            answer.status,
            202,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        let location = answer.header("location").expect("a Location").to_string();
        let location = if location.starts_with('/') {
            format!("http://{}{location}", self.addr)
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={digest}");
        let answer = curl(
            &self.args(&[
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/octet-stream",
                &url,
            ]),
            Some(bytes),
        );
        assert_eq!(
            answer.status,
            201,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        digest
    }

    fn put_manifest(&self, repository: &str, reference: &str, media_type: &str, body: &[u8]) {
        let url = format!("http://{}/v2/{repository}/manifests/{reference}", self.addr);
        let content_type = format!("Content-Type: {media_type}");
        let answer = curl(
            &self.args(&["-X", "PUT", "-H", &content_type, &url]),
            Some(body),
        );
        assert_eq!(
            answer.status,
            201,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(
            answer.header("docker-content-digest"),
            Some(digest_of(body).as_str())
        );
    }

    fn get_manifest(&self, repository: &str, reference: &str) -> Answer {
        let url = format!("http://{}/v2/{repository}/manifests/{reference}", self.addr);
        let accept = format!("Accept: {OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}");
        curl(&self.args(&["-H", &accept, &url]), None)
    }

    /// Push a small image (tagged `v1`) with an OCI manifest, or a Docker
    /// schema 2 one; returns its manifest digest.
    fn push_subject(&self, repository: &str, docker: bool) -> String {
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": {"Labels": {"test": unique("subject")}},
        })
        .to_string();
        let layer = format!("layer of {}\n", unique("subject")).into_bytes();
        let config_digest = self.put_blob(repository, config.as_bytes());
        let layer_digest = self.put_blob(repository, &layer);
        let (media_type, config_type, layer_type) = if docker {
            (
                DOCKER_MANIFEST,
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            )
        } else {
            (
                OCI_MANIFEST,
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar",
            )
        };
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": layer_type, "digest": layer_digest, "size": layer.len()}],
        })
        .to_string();
        self.put_manifest(repository, "v1", media_type, manifest.as_bytes());
        digest_of(manifest.as_bytes())
    }
}

fn referrers(addr: &str, login: Option<(&str, &str)>) -> Referrers {
    Referrers::new(
        addr,
        RegistryOptions {
            username: login.map(|l| l.0.to_string()),
            password: login.map(|l| l.1.to_string()),
            ..Default::default()
        },
    )
    .expect("client")
}

fn created(at: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(CREATED_ANNOTATION.to_string(), at.to_string())])
}

/// A CycloneDX document with a unique serial, non-ASCII text and odd
/// whitespace, so that byte-identity means something.
fn sbom(name: &str) -> Vec<u8> {
    format!(
        "{{\n  \"bomFormat\": \"CycloneDX\",\n  \"specVersion\": \"1.5\",\n  \"serialNumber\": \"urn:uuid:{}\",\n  \"components\": [{{\"type\": \"library\", \"name\": \"{name}\", \"version\": \"1.0\", \"description\": \"naïve café ✓\"}}]\t\n}}\r\n",
        unique("bom")
    )
    .into_bytes()
}

fn report(verdict: &str) -> Vec<u8> {
    serde_json::json!({"verdict": verdict, "findings": [], "run": unique("report")})
        .to_string()
        .into_bytes()
}

fn artifact_types(list: &[labforge_builder::scan::referrers::Descriptor]) -> BTreeSet<String> {
    list.iter()
        .map(|d| d.artifact_type.clone().unwrap_or_default())
        .collect()
}

fn digests(list: &[labforge_builder::scan::referrers::Descriptor]) -> BTreeSet<String> {
    list.iter().map(|d| d.digest.clone()).collect()
}

/// The referrers tag-schema index, read with curl.
fn tag_index(target: &Target<'_>, repository: &str, subject: &str) -> serde_json::Value {
    let answer = target.get_manifest(repository, &tag_for(subject));
    assert_eq!(
        answer.status,
        200,
        "the tag {} is missing: {}",
        tag_for(subject),
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.header("content-type"), Some(OCI_INDEX));
    let index = answer.json();
    assert_eq!(index["mediaType"], OCI_INDEX);
    assert_eq!(index["schemaVersion"], 2);
    index
}

fn skopeo_raw(reference: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ])
        .output()
        .unwrap_or_else(|e| panic!("skopeo is required (scripts/services.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("manifest JSON")
}

#[tokio::test]
async fn sbom_and_report_are_listed_fetched_byte_identical_and_kept_under_the_tag_schema() {
    let addr = registry_addr();
    let target = Target {
        addr: &addr,
        login: None,
    };
    let path = format!("labforge-it/{}", unique("referrers"));
    let repository = format!("{addr}/{path}");
    let subject = target.push_subject(&path, false);
    let client = referrers(&addr, None);

    assert!(
        client
            .list(&repository, &subject, None)
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        client
            .fetch(&repository, &subject, SBOM_ARTIFACT_TYPE)
            .await
            .expect("fetch"),
        None
    );

    let bom = sbom("numpy");
    let scan = report("pass");
    let sbom_at = client
        .attach(
            &repository,
            &subject,
            SBOM_ARTIFACT_TYPE,
            bom.clone(),
            created("2024-05-01T10:00:00Z"),
        )
        .await
        .expect("attach the SBOM");
    let report_at = client
        .attach(
            &repository,
            &subject,
            REPORT_ARTIFACT_TYPE,
            scan.clone(),
            created("2024-05-01T10:00:01Z"),
        )
        .await
        .expect("attach the report");
    // Distribution 2.8 has no referrers API: the tag schema holds the list.
    assert!(!sbom_at.via_api && !report_at.via_api);
    assert!(!sbom_at.reused && !report_at.reused);
    assert_ne!(sbom_at.digest, report_at.digest);

    let all = client
        .list(&repository, &subject, None)
        .await
        .expect("list");
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(
        artifact_types(&all),
        BTreeSet::from([
            SBOM_ARTIFACT_TYPE.to_string(),
            REPORT_ARTIFACT_TYPE.to_string()
        ])
    );
    assert_eq!(
        digests(&all),
        BTreeSet::from([sbom_at.digest.clone(), report_at.digest.clone()])
    );
    for d in &all {
        assert_eq!(d.media_type, OCI_MANIFEST);
        assert!(d.created().is_some(), "{d:?}");
    }
    let only_sbom = client
        .list(&repository, &subject, Some(SBOM_ARTIFACT_TYPE))
        .await
        .expect("list");
    assert_eq!(only_sbom.len(), 1);
    assert_eq!(only_sbom[0].digest, sbom_at.digest);
    assert_eq!(only_sbom[0].created(), Some("2024-05-01T10:00:00Z"));
    let only_report = client
        .list(&repository, &subject, Some(REPORT_ARTIFACT_TYPE))
        .await
        .expect("list");
    assert_eq!(only_report.len(), 1);
    assert_eq!(only_report[0].digest, report_at.digest);

    let fetched = client
        .fetch(&repository, &subject, SBOM_ARTIFACT_TYPE)
        .await
        .expect("fetch")
        .expect("an SBOM");
    assert_eq!(
        &fetched.payload[..],
        &bom[..],
        "the SBOM reads back byte-identical"
    );
    assert_eq!(fetched.manifest_digest, sbom_at.digest);
    assert_eq!(fetched.annotations, created("2024-05-01T10:00:00Z"));
    let fetched = client
        .fetch(&repository, &subject, REPORT_ARTIFACT_TYPE)
        .await
        .expect("fetch")
        .expect("a report");
    assert_eq!(&fetched.payload[..], &scan[..]);
    assert_eq!(fetched.manifest_digest, report_at.digest);

    // The tag schema, read with curl: an OCI index under sha256-<hex>.
    assert!(tag_for(&subject).starts_with("sha256-"));
    let index = tag_index(&target, &path, &subject);
    let entries = index["manifests"].as_array().expect("a list");
    assert_eq!(entries.len(), 2, "{index}");
    let by_digest: BTreeMap<&str, &serde_json::Value> = entries
        .iter()
        .map(|e| (e["digest"].as_str().expect("digest"), e))
        .collect();
    let sbom_entry = by_digest[sbom_at.digest.as_str()];
    assert_eq!(sbom_entry["artifactType"], SBOM_ARTIFACT_TYPE);
    assert_eq!(sbom_entry["mediaType"], OCI_MANIFEST);
    assert_eq!(
        sbom_entry["annotations"][CREATED_ANNOTATION],
        "2024-05-01T10:00:00Z"
    );
    assert_eq!(
        by_digest[report_at.digest.as_str()]["artifactType"],
        REPORT_ARTIFACT_TYPE
    );
    // Each entry's size is its manifest's.
    for (digest, entry) in &by_digest {
        let manifest = target.get_manifest(&path, digest);
        assert_eq!(manifest.status, 200);
        assert_eq!(entry["size"], manifest.body.len(), "{digest}");
        assert_eq!(&digest_of(&manifest.body), digest);
    }

    // Artifacts are pushed by digest: the only tags are the image's and the index's.
    let tags = curl(&[&format!("http://{addr}/v2/{path}/tags/list")], None).json();
    let tags: BTreeSet<&str> = tags["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert_eq!(tags, BTreeSet::from(["v1", tag_for(&subject).as_str()]));

    // A second, independent reader: skopeo sees the artifact and its subject.
    let raw = skopeo_raw(&format!("{repository}@{}", sbom_at.digest));
    assert_eq!(raw["mediaType"], OCI_MANIFEST);
    assert_eq!(raw["artifactType"], SBOM_ARTIFACT_TYPE);
    assert_eq!(raw["subject"]["digest"], subject.as_str());
    assert_eq!(raw["subject"]["mediaType"], OCI_MANIFEST);
    let subject_manifest = target.get_manifest(&path, &subject);
    assert_eq!(raw["subject"]["size"], subject_manifest.body.len());
    assert_eq!(
        raw["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(raw["config"]["digest"], EMPTY_DIGEST);
    assert_eq!(raw["config"]["size"], 2);
    let layers = raw["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], SBOM_ARTIFACT_TYPE);
    assert_eq!(layers[0]["digest"], digest_of(&bom).as_str());
    assert_eq!(layers[0]["size"], bom.len());
    assert_eq!(
        raw["annotations"][CREATED_ANNOTATION],
        "2024-05-01T10:00:00Z"
    );
}

#[tokio::test]
async fn the_newest_sbom_is_fetched_and_all_stay_listed() {
    let addr = registry_addr();
    let target = Target {
        addr: &addr,
        login: None,
    };
    let path = format!("labforge-it/{}", unique("referrers"));
    let repository = format!("{addr}/{path}");
    let subject = target.push_subject(&path, false);
    let client = referrers(&addr, None);
    let attach = |payload: Vec<u8>, at: &'static str| {
        let client = &client;
        let repository = repository.clone();
        let subject = subject.clone();
        async move {
            client
                .attach(
                    &repository,
                    &subject,
                    SBOM_ARTIFACT_TYPE,
                    payload,
                    created(at),
                )
                .await
                .expect("attach")
        }
    };
    let fetch = || async {
        client
            .fetch(&repository, &subject, SBOM_ARTIFACT_TYPE)
            .await
            .expect("fetch")
            .expect("an SBOM")
    };

    let first = sbom("first");
    let second = sbom("second");
    let a = attach(first.clone(), "2024-05-01T10:00:00Z").await;
    let b = attach(second.clone(), "2024-05-02T10:00:00Z").await;
    let got = fetch().await;
    assert_eq!(&got.payload[..], &second[..]);
    assert_eq!(got.manifest_digest, b.digest);
    let listed = client
        .list(&repository, &subject, None)
        .await
        .expect("list");
    assert_eq!(
        digests(&listed),
        BTreeSet::from([a.digest.clone(), b.digest.clone()])
    );

    // Attached later but created earlier: the created time decides, not the order.
    let older = sbom("older");
    let c = attach(older, "2024-04-01T00:00:00+02:00").await;
    assert_eq!(fetch().await.manifest_digest, b.digest);

    // The first SBOM again, now the newest: it is attached anew (not
    // reused, since the newest held another payload) and wins.
    let again = attach(first.clone(), "2024-05-03T10:00:00Z").await;
    assert!(!again.reused);
    assert_ne!(again.digest, a.digest);
    let got = fetch().await;
    assert_eq!(&got.payload[..], &first[..]);
    assert_eq!(got.manifest_digest, again.digest);
    let listed = client
        .list(&repository, &subject, Some(SBOM_ARTIFACT_TYPE))
        .await
        .expect("list");
    assert_eq!(
        digests(&listed),
        BTreeSet::from([a.digest, b.digest, c.digest, again.digest])
    );
}

#[tokio::test]
async fn attaching_the_same_payload_twice_keeps_one_entry() {
    let addr = registry_addr();
    let target = Target {
        addr: &addr,
        login: None,
    };
    let path = format!("labforge-it/{}", unique("referrers"));
    let repository = format!("{addr}/{path}");
    let subject = target.push_subject(&path, false);
    let client = referrers(&addr, None);
    let bom = sbom("same");

    let one = client
        .attach(
            &repository,
            &subject,
            SBOM_ARTIFACT_TYPE,
            bom.clone(),
            created("2024-05-01T10:00:00Z"),
        )
        .await
        .expect("attach");
    // The same payload and annotations: the same manifest.
    let two = client
        .attach(
            &repository,
            &subject,
            SBOM_ARTIFACT_TYPE,
            bom.clone(),
            created("2024-05-01T10:00:00Z"),
        )
        .await
        .expect("attach again");
    assert_eq!(one.digest, two.digest);
    // The same payload, created later: the newest already holds it.
    let three = client
        .attach(
            &repository,
            &subject,
            SBOM_ARTIFACT_TYPE,
            bom.clone(),
            created("2024-06-01T10:00:00Z"),
        )
        .await
        .expect("attach a third time");
    assert!(three.reused);
    assert!(!three.via_api);
    assert_eq!(three.digest, one.digest);

    let listed = client
        .list(&repository, &subject, None)
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].digest, one.digest);
    let index = tag_index(&target, &path, &subject);
    assert_eq!(
        index["manifests"].as_array().map(Vec::len),
        Some(1),
        "{index}"
    );
    let got = client
        .fetch(&repository, &subject, SBOM_ARTIFACT_TYPE)
        .await
        .expect("fetch")
        .expect("an SBOM");
    assert_eq!(&got.payload[..], &bom[..]);
}

#[tokio::test]
async fn a_subject_that_is_not_in_the_repository_is_an_error() {
    let addr = registry_addr();
    let target = Target {
        addr: &addr,
        login: None,
    };
    let path = format!("labforge-it/{}", unique("referrers"));
    let repository = format!("{addr}/{path}");
    let subject = target.push_subject(&path, false);
    let client = referrers(&addr, None);
    let absent = digest_of(unique("absent").as_bytes());

    let err = client
        .attach(
            &repository,
            &absent,
            SBOM_ARTIFACT_TYPE,
            sbom("x"),
            created("2024-05-01T10:00:00Z"),
        )
        .await
        .expect_err("no such subject");
    assert!(
        matches!(err, ReferrersError::SubjectMissing { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&repository) && message.contains(&absent),
        "{message}"
    );
    assert!(message.contains("push the image"), "{message}");
    // Nothing was written for it.
    assert_eq!(target.get_manifest(&path, &tag_for(&absent)).status, 404);

    // The image exists, but in another repository.
    let elsewhere = format!("{addr}/labforge-it/{}", unique("other"));
    let err = client
        .attach(
            &elsewhere,
            &subject,
            SBOM_ARTIFACT_TYPE,
            sbom("x"),
            created("2024-05-01T10:00:00Z"),
        )
        .await
        .expect_err("not in that repository");
    assert!(
        matches!(err, ReferrersError::SubjectMissing { .. }),
        "{err:?}"
    );

    // Nothing attached: an empty list, no SBOM.
    assert!(
        client
            .list(&repository, &absent, None)
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        client
            .fetch(&repository, &absent, SBOM_ARTIFACT_TYPE)
            .await
            .expect("fetch"),
        None
    );

    // Malformed input is refused before any request.
    let err = client
        .attach(
            &repository,
            "sha256:abc",
            SBOM_ARTIFACT_TYPE,
            sbom("x"),
            BTreeMap::new(),
        )
        .await
        .expect_err("not a digest");
    assert!(matches!(err, ReferrersError::Digest { .. }), "{err:?}");
    let err = client
        .list(&format!("registry.example.org/{path}"), &subject, None)
        .await
        .expect_err("another registry");
    assert!(matches!(err, ReferrersError::Repository { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr), "{err}");
    let err = client
        .attach(
            &repository,
            &subject,
            SBOM_ARTIFACT_TYPE,
            Vec::new(),
            BTreeMap::new(),
        )
        .await
        .expect_err("empty payload");
    assert!(
        matches!(err, ReferrersError::EmptyPayload { .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_attaches_through_one_client_are_all_listed() {
    let addr = registry_addr();
    let target = Target {
        addr: &addr,
        login: None,
    };
    let path = format!("labforge-it/{}", unique("referrers"));
    let repository = format!("{addr}/{path}");
    let subject = target.push_subject(&path, false);
    let client = Arc::new(referrers(&addr, None));

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..6 {
        let client = Arc::clone(&client);
        let repository = repository.clone();
        let subject = subject.clone();
        tasks.spawn(async move {
            let (kind, payload) = if i % 2 == 0 {
                (SBOM_ARTIFACT_TYPE, sbom(&format!("pkg{i}")))
            } else {
                (REPORT_ARTIFACT_TYPE, report(&format!("run{i}")))
            };
            client
                .attach(
                    &repository,
                    &subject,
                    kind,
                    payload,
                    created(&format!("2024-05-01T10:00:0{i}Z")),
                )
                .await
                .expect("attach")
                .digest
        });
    }
    let mut attached = BTreeSet::new();
    while let Some(done) = tasks.join_next().await {
        attached.insert(done.expect("task"));
    }
    assert_eq!(attached.len(), 6);
    let listed = client
        .list(&repository, &subject, None)
        .await
        .expect("list");
    assert_eq!(digests(&listed), attached);
    let index = tag_index(&target, &path, &subject);
    assert_eq!(
        index["manifests"].as_array().map(Vec::len),
        Some(6),
        "{index}"
    );
    let reports = client
        .list(&repository, &subject, Some(REPORT_ARTIFACT_TYPE))
        .await
        .expect("list");
    assert_eq!(reports.len(), 3);
}

#[tokio::test]
async fn an_entry_lost_by_another_writer_comes_back_when_attached_again() {
    let addr = registry_addr();
    let target = Target {
        addr: &addr,
        login: None,
    };
    let path = format!("labforge-it/{}", unique("referrers"));
    let repository = format!("{addr}/{path}");
    let subject = target.push_subject(&path, false);
    let client = referrers(&addr, None);
    let bom = sbom("lost");
    let at = client
        .attach(
            &repository,
            &subject,
            SBOM_ARTIFACT_TYPE,
            bom.clone(),
            created("2024-05-01T10:00:00Z"),
        )
        .await
        .expect("attach");

    // Another client overwrites the index with one that lacks our entry.
    let other = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [],
    })
    .to_string();
    target.put_manifest(&path, &tag_for(&subject), OCI_INDEX, other.as_bytes());
    assert!(
        client
            .list(&repository, &subject, None)
            .await
            .expect("list")
            .is_empty()
    );

    let again = client
        .attach(
            &repository,
            &subject,
            SBOM_ARTIFACT_TYPE,
            bom.clone(),
            created("2024-05-01T10:00:00Z"),
        )
        .await
        .expect("attach again");
    assert_eq!(again.digest, at.digest);
    let listed = client
        .list(&repository, &subject, None)
        .await
        .expect("list");
    assert_eq!(digests(&listed), BTreeSet::from([at.digest]));
    let got = client
        .fetch(&repository, &subject, SBOM_ARTIFACT_TYPE)
        .await
        .expect("fetch")
        .expect("an SBOM");
    assert_eq!(&got.payload[..], &bom[..]);

    // A tag that holds something other than an index is not overwritten.
    let stranger = target.push_subject(&path, false);
    let manifest = target.get_manifest(&path, &stranger);
    target.put_manifest(&path, &tag_for(&subject), OCI_MANIFEST, &manifest.body);
    let err = client
        .attach(
            &repository,
            &subject,
            REPORT_ARTIFACT_TYPE,
            report("pass"),
            created("2024-05-02T10:00:00Z"),
        )
        .await
        .expect_err("the tag is not an index");
    assert!(matches!(err, ReferrersError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains(&tag_for(&subject)), "{err}");
    assert_eq!(
        digest_of(&target.get_manifest(&path, &tag_for(&subject)).body),
        stranger
    );
}

#[tokio::test]
async fn a_docker_schema2_image_is_a_subject_too() {
    let addr = registry_addr();
    let target = Target {
        addr: &addr,
        login: None,
    };
    let path = format!("labforge-it/{}", unique("referrers"));
    let repository = format!("{addr}/{path}");
    let subject = target.push_subject(&path, true);
    let client = referrers(&addr, None);
    let bom = sbom("docker");
    let at = client
        .attach(
            &repository,
            &subject,
            SBOM_ARTIFACT_TYPE,
            bom.clone(),
            created("2024-05-01T10:00:00Z"),
        )
        .await
        .expect("attach");
    let raw = skopeo_raw(&format!("{repository}@{}", at.digest));
    assert_eq!(raw["subject"]["mediaType"], DOCKER_MANIFEST);
    assert_eq!(raw["subject"]["digest"], subject.as_str());
    let got = client
        .fetch(&repository, &subject, SBOM_ARTIFACT_TYPE)
        .await
        .expect("fetch")
        .expect("an SBOM");
    assert_eq!(&got.payload[..], &bom[..]);
}

/// A registry process of our own that wants the htpasswd.example login.
struct LoginRegistry {
    child: Child,
    addr: String,
    _storage: tempfile::TempDir,
}

impl Drop for LoginRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    format!("127.0.0.1:{port}")
}

fn start_login_registry() -> LoginRegistry {
    let addr = free_addr();
    let storage = tempfile::tempdir().expect("tempdir");
    let child = Command::new("docker-registry")
        .args([
            "serve",
            root()
                .join("registry-config/config.yml")
                .to_str()
                .expect("utf8"),
        ])
        .env("REGISTRY_HTTP_ADDR", &addr)
        .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", storage.path())
        .env("REGISTRY_AUTH", "htpasswd")
        .env("REGISTRY_AUTH_HTPASSWD_REALM", "labforge-test")
        .env(
            "REGISTRY_AUTH_HTPASSWD_PATH",
            root().join("registry-config/htpasswd.example"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("docker-registry is required (scripts/services.sh installs it): {e}")
        });
    let server = LoginRegistry {
        child,
        addr,
        _storage: storage,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&server.addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "the registry did not start on {}",
            server.addr
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

#[tokio::test]
async fn a_registry_with_a_login_takes_the_login_and_names_who_was_refused() {
    let server = start_login_registry();
    let login = format!("{USER}:{PASSWORD}");
    let target = Target {
        addr: &server.addr,
        login: Some(&login),
    };
    let path = format!("labforge-it/{}", unique("referrers"));
    let repository = format!("{}/{path}", server.addr);
    let subject = target.push_subject(&path, false);
    let bom = sbom("login");

    let wrong_password = "not-the-password-xyzzy";
    let refused = referrers(&server.addr, Some((USER, wrong_password)));
    let err = refused
        .attach(
            &repository,
            &subject,
            SBOM_ARTIFACT_TYPE,
            bom.clone(),
            created("2024-05-01T10:00:00Z"),
        )
        .await
        .expect_err("wrong password");
    assert!(matches!(err, ReferrersError::Auth { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("user \"labforge\""), "{message}");
    assert!(message.contains(&subject), "{message}");
    assert!(
        !message.contains(wrong_password),
        "the password leaked: {message}"
    );

    let anonymous = referrers(&server.addr, None);
    let err = anonymous
        .list(&repository, &subject, None)
        .await
        .expect_err("no login");
    assert!(matches!(err, ReferrersError::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains("anonymous"), "{err}");

    let client = referrers(&server.addr, Some((USER, PASSWORD)));
    let at = client
        .attach(
            &repository,
            &subject,
            SBOM_ARTIFACT_TYPE,
            bom.clone(),
            created("2024-05-01T10:00:00Z"),
        )
        .await
        .expect("attach with the login");
    assert!(!at.via_api);
    let got = client
        .fetch(&repository, &subject, SBOM_ARTIFACT_TYPE)
        .await
        .expect("fetch")
        .expect("an SBOM");
    assert_eq!(&got.payload[..], &bom[..]);
    let index = tag_index(&target, &path, &subject);
    assert_eq!(index["manifests"][0]["digest"], at.digest.as_str());
}

#[tokio::test]
async fn a_registry_that_is_not_running_is_named() {
    let addr = free_addr();
    let client = referrers(&addr, None);
    let subject = digest_of(b"anything");
    let err = client
        .attach(
            &format!("{addr}/labforge-it/none"),
            &subject,
            SBOM_ARTIFACT_TYPE,
            sbom("x"),
            BTreeMap::new(),
        )
        .await
        .expect_err("nothing listens there");
    assert!(matches!(err, ReferrersError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr), "{err}");
}
