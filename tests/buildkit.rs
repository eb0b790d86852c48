//! The BuildKit builder (`labforge_builder::buildkit`) against the real
//! Docker Engine (started by scripts/services.sh), its busybox stand-in and
//! the local registry: output lines, labels and build arguments, failures,
//! and which `FROM ${BASE_IMAGE}` references BuildKit can build on. A
//! missing engine or registry fails these tests; they are never skipped.
//! Every test tags its images uniquely and removes them, also when it fails.

mod common;
use common::Images;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use labforge_builder::buildkit;
use labforge_builder::engine::{BuildRequest, Built, Engine, EngineError};

const BUSYBOX: &str = "labforge-standin/busybox:latest";

async fn engine() -> Engine {
    match Engine::connect().await {
        Ok(e) => e,
        Err(e) => panic!(
            "{}\nThe BuildKit tests need the Docker Engine: run `bash scripts/services.sh` (the README's test command does).",
            labforge_core::error_chain(&e)
        ),
    }
}

fn registry() -> String {
    std::env::var("LABFORGE_TEST_REGISTRY").unwrap_or_else(|_| {
        panic!("LABFORGE_TEST_REGISTRY is not set: run `bash scripts/services.sh` and `. /var/lib/labforge/env` (the README's test command does)")
    })
}

/// A name part no other test or run uses.
fn unique(what: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{what}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn unique_tag(what: &str) -> String {
    format!("labforge-it/buildkit-{}:t", unique(what))
}

fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Build with BuildKit, collecting the streamed lines; `images` learns the
/// tag first.
async fn build(
    engine: &Engine,
    images: &mut Images,
    req: &BuildRequest<'_>,
) -> (Result<Built, EngineError>, Vec<String>) {
    images.add(req.tag);
    let mut streamed = Vec::new();
    let mut on_line = |l: &str| streamed.push(l.to_string());
    let result = buildkit::build(engine, req, &mut on_line).await;
    (result, streamed)
}

fn built(result: Result<Built, EngineError>) -> Built {
    match result {
        Ok(b) => b,
        Err(e) => {
            let tail = match &e {
                EngineError::BuildFailed { tail, .. } => tail.join("\n"),
                _ => String::new(),
            };
            panic!("build failed: {}\n{tail}", labforge_core::error_chain(&e))
        }
    }
}

/// A child of `${BASE_IMAGE}` that proves it stands on the busybox stand-in.
const CHILD: &str =
    "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN test -x /bin/sh && echo child-of-base > /child\n";

/// Build [`CHILD`] on `base` with BuildKit.
async fn build_child(
    engine: &Engine,
    images: &mut Images,
    what: &str,
    base: &str,
) -> (Result<Built, EngineError>, Vec<String>) {
    let tag = unique_tag(what);
    let args = map(&[("BASE_IMAGE", base)]);
    let empty: BTreeMap<String, String> = BTreeMap::new();
    let no_files = BTreeMap::new();
    let request = BuildRequest {
        image: what,
        dockerfile: CHILD,
        context: &no_files,
        tag: &tag,
        build_args: &args,
        labels: &empty,
    };
    let future = build(engine, images, &request);
    // A FROM that BuildKit tries to fetch from an unreachable registry must
    // not hang the suite.
    match tokio::time::timeout(Duration::from_secs(120), future).await {
        Ok(r) => r,
        Err(_) => panic!("{what}: the build on {base} took more than 120 s"),
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn skopeo_digest(reference: &str) -> String {
    let out = run(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    );
    let doc: serde_json::Value = serde_json::from_str(&out).expect("skopeo json");
    doc["Digest"].as_str().expect("Digest").to_string()
}

#[tokio::test]
async fn buildkit_is_available_on_this_engine() {
    let engine = engine().await;
    let (version, api) = engine.version().await.expect("version");
    assert!(
        buildkit::available(&engine).await,
        "engine {version}, API {api}: BuildKit should be available"
    );
}

#[tokio::test]
async fn a_two_step_build_streams_the_run_output() {
    let engine = engine().await;
    let mut images = Images::default();
    let tag = unique_tag("two-step");
    // Unique content: the COPY and the RUN after it miss the build cache.
    let greeting = format!("hello from {}", unique("context"));
    let context = BTreeMap::from([(
        "greeting.txt".to_string(),
        format!("{greeting}\n").into_bytes(),
    )]);
    let dockerfile = format!(
        "FROM {BUSYBOX}\nCOPY greeting.txt /greeting.txt\nRUN cat /greeting.txt && echo buildkit-says-hi\n"
    );
    let empty = BTreeMap::new();
    let request = BuildRequest {
        image: "two-step",
        dockerfile: &dockerfile,
        context: &context,
        tag: &tag,
        build_args: &empty,
        labels: &empty,
    };
    let (result, streamed) = build(&engine, &mut images, &request).await;
    let b = built(result);
    eprintln!("{}", streamed.join("\n"));
    assert!(b.image_id.starts_with("sha256:"), "{}", b.image_id);
    assert_eq!(streamed, b.log);
    // The RUN's vertex is announced, and its output arrives under its number.
    let run_line = streamed
        .iter()
        .find(|l| l.ends_with("] RUN cat /greeting.txt && echo buildkit-says-hi"))
        .unwrap_or_else(|| panic!("no RUN vertex line: {streamed:#?}"));
    let number = run_line.split_whitespace().next().expect("#N").to_string();
    assert!(number.starts_with('#'), "{run_line}");
    for output in [greeting.as_str(), "buildkit-says-hi"] {
        assert!(
            streamed.contains(&format!("{number} {output}")),
            "{output}: {streamed:#?}"
        );
    }
    let info = engine
        .inspect_image(&tag)
        .await
        .expect("inspect")
        .expect("the tag exists");
    assert_eq!(info.id, b.image_id);
    let run = engine
        .run_test(&tag, "cat /greeting.txt", Duration::from_secs(30))
        .await
        .expect("run");
    assert_eq!(run.output, format!("{greeting}\n"));

    // The same build again comes from the cache: same image, nothing runs.
    let (result, again) = build(&engine, &mut images, &request).await;
    let second = built(result);
    eprintln!("{}", again.join("\n"));
    assert_eq!(second.image_id, b.image_id);
    assert!(again.iter().any(|l| l.ends_with(" CACHED")), "{again:#?}");
    assert!(
        !again
            .iter()
            .any(|l| l.split_once(' ').map(|(_, rest)| rest) == Some("buildkit-says-hi")),
        "{again:#?}"
    );
}

#[tokio::test]
async fn labels_and_build_args_arrive() {
    let engine = engine().await;
    let mut images = Images::default();
    let tag = unique_tag("args");
    let dockerfile = format!(
        "FROM {BUSYBOX}\nARG GREETING\nARG UNUSED_DEFAULT=kept\nRUN echo \"$GREETING/$UNUSED_DEFAULT\" > /greeting\n"
    );
    let args = map(&[("GREETING", "hello buildkit")]);
    let labels = map(&[
        ("labforge.image", "args"),
        ("org.opencontainers.image.title", "A title with spaces"),
    ]);
    let (result, _) = build(
        &engine,
        &mut images,
        &BuildRequest {
            image: "args",
            dockerfile: &dockerfile,
            context: &BTreeMap::new(),
            tag: &tag,
            build_args: &args,
            labels: &labels,
        },
    )
    .await;
    let b = built(result);
    let info = engine
        .inspect_image(&tag)
        .await
        .expect("inspect")
        .expect("the tag exists");
    assert_eq!(info.id, b.image_id);
    for (k, v) in &labels {
        assert_eq!(info.labels.get(k), Some(v), "label {k}: {:?}", info.labels);
    }
    let run = engine
        .run_test(&tag, "cat /greeting", Duration::from_secs(30))
        .await
        .expect("run");
    assert_eq!(run.output, "hello buildkit/kept\n");
}

#[tokio::test]
async fn a_failing_run_names_the_step_and_keeps_its_output() {
    let engine = engine().await;
    let mut images = Images::default();
    let tag = unique_tag("broken");
    let dockerfile = format!(
        "FROM {BUSYBOX}\nRUN echo fine\nRUN echo before-failure && exit 3\nRUN echo never\n"
    );
    let empty: BTreeMap<String, String> = BTreeMap::new();
    let (result, streamed) = build(
        &engine,
        &mut images,
        &BuildRequest {
            image: "broken",
            dockerfile: &dockerfile,
            context: &BTreeMap::new(),
            tag: &tag,
            build_args: &empty,
            labels: &empty,
        },
    )
    .await;
    eprintln!("{}", streamed.join("\n"));
    match result {
        Err(EngineError::BuildFailed {
            image,
            instruction,
            message,
            tail,
        }) => {
            assert_eq!(image, "broken");
            let instruction = instruction.expect("the failing step");
            assert_eq!(instruction, "[3/4] RUN echo before-failure && exit 3");
            assert!(message.contains("exit code: 3"), "{message}");
            assert!(!tail.is_empty() && tail.len() <= 20, "{tail:#?}");
            assert!(
                tail.iter().any(|l| l.ends_with(" before-failure")),
                "{tail:#?}"
            );
            assert!(tail.iter().any(|l| l.contains(&message)), "{tail:#?}");
            assert_eq!(tail.last(), streamed.last());
            assert!(!streamed.iter().any(|l| l.ends_with(" never")));
            let text = EngineError::BuildFailed {
                image,
                instruction: Some(instruction),
                message,
                tail,
            }
            .to_string();
            assert!(
                text.starts_with("broken: the build failed at [3/4] RUN echo before-failure"),
                "{text}"
            );
        }
        Err(e) => panic!(
            "expected BuildFailed, got {}",
            labforge_core::error_chain(&e)
        ),
        Ok(b) => panic!("the broken build succeeded: {}", b.image_id),
    }
    assert_eq!(engine.image_id(&tag).await.expect("inspect"), None);
}

#[tokio::test]
async fn an_unparsable_dockerfile_is_a_build_failure() {
    let engine = engine().await;
    let mut images = Images::default();
    let tag = unique_tag("unparsable");
    let dockerfile = format!("FROM {BUSYBOX}\nBOGUS instruction\n");
    let empty: BTreeMap<String, String> = BTreeMap::new();
    let (result, streamed) = build(
        &engine,
        &mut images,
        &BuildRequest {
            image: "unparsable",
            dockerfile: &dockerfile,
            context: &BTreeMap::new(),
            tag: &tag,
            build_args: &empty,
            labels: &empty,
        },
    )
    .await;
    match result {
        Err(EngineError::BuildFailed { message, tail, .. }) => {
            assert!(message.to_lowercase().contains("bogus"), "{message}");
            assert_eq!(tail.last(), streamed.last());
        }
        Err(e) => panic!(
            "expected BuildFailed, got {}",
            labforge_core::error_chain(&e)
        ),
        Ok(b) => panic!("the unparsable build succeeded: {}", b.image_id),
    }
}

#[tokio::test]
async fn a_missing_base_is_a_clear_error() {
    let engine = engine().await;
    let mut images = Images::default();
    // In the local registry (answers at once), and in no store.
    let missing = format!("{}/labforge-it/{}:absent", registry(), unique("missing"));
    let (result, streamed) = build_child(&engine, &mut images, "missing-base", &missing).await;
    eprintln!("{}", streamed.join("\n"));
    match result {
        Err(EngineError::BuildFailed {
            instruction,
            message,
            ..
        }) => {
            assert!(message.contains(&missing), "{message}");
            assert!(message.contains("not found"), "{message}");
            let instruction = instruction.expect("the failing vertex");
            assert!(instruction.contains(&missing), "{instruction}");
        }
        Err(e) => panic!(
            "expected BuildFailed, got {}",
            labforge_core::error_chain(&e)
        ),
        Ok(b) => panic!("a build on a missing base succeeded: {}", b.image_id),
    }
}

/// (a) A tag only the engine's store has: BuildKit in the engine uses it.
#[tokio::test]
async fn from_a_local_only_tag_builds() {
    let engine = engine().await;
    let mut images = Images::default();
    // A tag no registry has.
    let local = unique_tag("local-only");
    let empty: BTreeMap<String, String> = BTreeMap::new();
    let (result, _) = build(
        &engine,
        &mut images,
        &BuildRequest {
            image: "local-only",
            dockerfile: &format!("FROM {BUSYBOX}\nRUN echo local > /local\n"),
            context: &BTreeMap::new(),
            tag: &local,
            build_args: &empty,
            labels: &empty,
        },
    )
    .await;
    built(result);
    let (result, streamed) = build_child(&engine, &mut images, "on-local-tag", &local).await;
    let child = built(result);
    eprintln!("{}", streamed.join("\n"));
    let run = engine
        .run_test(
            &child.image_id,
            "cat /local /child",
            Duration::from_secs(30),
        )
        .await
        .expect("run");
    assert_eq!(run.output, "local\nchild-of-base\n");
}

/// (b) A digest reference into the plain-HTTP local registry: the one the
/// engine's store knows (a repo digest of the stand-in), and one it does not
/// (pushed by skopeo and removed from the store), which BuildKit fetches.
#[tokio::test]
async fn from_a_digest_in_the_local_registry_builds() {
    let engine = engine().await;
    let mut images = Images::default();
    let registry = registry();

    let standin = format!("{registry}/standin/busybox");
    let digest = skopeo_digest(&format!("{standin}:latest"));
    let pinned = format!("{standin}@{digest}");
    let (result, streamed) = build_child(&engine, &mut images, "on-known-digest", &pinned).await;
    eprintln!("{}", streamed.join("\n"));
    built(result);
    // `name:tag@digest`, the form `labforge build` pins bases to.
    let tagged = format!("{standin}:latest@{digest}");
    let (result, _) = build_child(&engine, &mut images, "on-tag-and-digest", &tagged).await;
    built(result);

    // A base only the registry has.
    let local = unique_tag("pushed");
    let stamp = unique("stamp");
    let empty: BTreeMap<String, String> = BTreeMap::new();
    let (result, _) = build(
        &engine,
        &mut images,
        &BuildRequest {
            image: "pushed",
            dockerfile: &format!("FROM {BUSYBOX}\nRUN echo {stamp} > /stamp\n"),
            context: &BTreeMap::new(),
            tag: &local,
            build_args: &empty,
            labels: &empty,
        },
    )
    .await;
    built(result);
    let remote = format!("{registry}/labforge-it/buildkit-base:{}", unique("base"));
    run(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("docker-daemon:{local}"),
            &format!("docker://{remote}"),
        ],
    );
    let digest = skopeo_digest(&remote);
    assert!(engine.remove_image(&local).await.expect("remove"));
    let (repository, _) = remote.rsplit_once(':').expect("a tag");
    let pinned = format!("{repository}@{digest}");
    let (result, streamed) = build_child(&engine, &mut images, "on-pushed-digest", &pinned).await;
    eprintln!("{}", streamed.join("\n"));
    let child = built(result);
    // What BuildKit pulled is not tagged, but kept: remove it too.
    images.add(&pinned);
    let run = engine
        .run_test(
            &child.image_id,
            "cat /stamp /child",
            Duration::from_secs(30),
        )
        .await
        .expect("run");
    assert_eq!(run.output, format!("{stamp}\nchild-of-base\n"));
}

/// (c) An image ID (`sha256:…`), which the classic builder accepts:
/// BuildKit reads it as the tag of `docker.io/library/sha256` and asks
/// Docker Hub for it (https://github.com/moby/buildkit/issues/2204).
#[tokio::test]
async fn from_an_image_id_fails_with_buildkit_but_not_classic() {
    let engine = engine().await;
    let mut images = Images::default();
    let id = engine
        .image_id(BUSYBOX)
        .await
        .expect("inspect")
        .expect("the busybox stand-in");
    let (result, streamed) = build_child(&engine, &mut images, "on-image-id", &id).await;
    eprintln!("{}", streamed.join("\n"));
    match result {
        Err(EngineError::BuildFailed {
            instruction,
            message,
            ..
        }) => {
            let instruction = instruction.expect("the failing vertex");
            assert!(
                instruction.contains("load metadata for docker.io/library/sha256:"),
                "{instruction}"
            );
            assert!(!message.is_empty());
        }
        Err(e) => panic!(
            "expected BuildFailed, got {}",
            labforge_core::error_chain(&e)
        ),
        Ok(b) => panic!("a BuildKit build on an image id succeeded: {}", b.image_id),
    }

    let tag = unique_tag("classic-on-image-id");
    images.add(&tag);
    let args = map(&[("BASE_IMAGE", &id)]);
    let empty = BTreeMap::new();
    let mut on_line = |_: &str| {};
    let classic = engine
        .build(
            &BuildRequest {
                image: "classic-on-image-id",
                dockerfile: CHILD,
                context: &BTreeMap::new(),
                tag: &tag,
                build_args: &args,
                labels: &empty,
            },
            &mut on_line,
        )
        .await;
    built(classic);
}
