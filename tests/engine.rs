//! The engine module against the real Docker Engine (started by
//! scripts/services.sh) and its busybox stand-in: chained builds, build
//! failures, the context tar inside an image, smoke tests and their cleanup.
//! A missing engine fails these tests; they are never skipped. Every test
//! tags its images uniquely and removes them, also when it fails.

mod common;
use common::Images;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use labforge_builder::engine::{BuildRequest, Built, Engine, EngineError, context_tar};

const BUSYBOX: &str = "labforge-standin/busybox:latest";

async fn engine() -> Engine {
    match Engine::connect().await {
        Ok(e) => e,
        Err(e) => panic!(
            "{}\nThe engine tests need the Docker Engine: run `bash scripts/services.sh` (the README's test command does).",
            labforge_core::error_chain(&e)
        ),
    }
}

/// A tag no other test or run uses.
fn unique_tag(what: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "labforge-it/engine-{what}:{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn files(entries: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    entries
        .iter()
        .map(|(p, b)| (p.to_string(), b.to_vec()))
        .collect()
}

fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Build, collecting the streamed lines; `images` learns the tag first.
async fn build(
    engine: &Engine,
    images: &mut Images,
    req: &BuildRequest<'_>,
) -> (Result<Built, EngineError>, Vec<String>) {
    images.add(req.tag);
    let mut streamed = Vec::new();
    let mut on_line = |l: &str| streamed.push(l.to_string());
    let result = engine.build(req, &mut on_line).await;
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

#[tokio::test]
async fn engine_answers_with_its_versions() {
    let engine = engine().await;
    let (version, api) = engine.version().await.expect("version");
    eprintln!(
        "engine {version}, API {api}, client speaks {} at {}",
        engine.api_version(),
        engine.host()
    );
    assert!(!version.is_empty());
    assert!(api.starts_with("1."), "{api}");
    // The client never speaks a newer API than the engine.
    let parse = |v: &str| -> (u32, u32) {
        let (a, b) = v.split_once('.').expect("major.minor");
        (a.parse().expect("major"), b.parse().expect("minor"))
    };
    assert!(parse(&engine.api_version()) <= parse(&api));
}

#[tokio::test]
async fn connect_to_a_missing_socket_says_what_to_do() {
    let err = Engine::connect_to("unix:///nonexistent/docker.sock")
        .await
        .expect_err("no engine there");
    let text = err.to_string();
    assert!(matches!(err, EngineError::Connect { .. }), "{text}");
    assert!(text.contains("scripts/services.sh"), "{text}");
    assert!(text.contains("/nonexistent/docker.sock"), "{text}");
}

#[tokio::test]
async fn three_level_chain_with_build_args_and_labels() {
    let engine = engine().await;
    let mut images = Images::default();
    let started = Instant::now();

    let tag_a = unique_tag("chain-a");
    let context_a = files(&[("greeting.txt", b"hello from A\n")]);
    let labels_a = map(&[("labforge.image", "chain-a"), ("labforge.level", "0")]);
    let no_args = BTreeMap::new();
    let (result, streamed_a) = build(
        &engine,
        &mut images,
        &BuildRequest {
            image: "chain-a",
            dockerfile: &format!(
                "FROM {BUSYBOX}\nCOPY greeting.txt /greeting.txt\nRUN cat /greeting.txt > /level-a && echo built-a\n"
            ),
            context: &context_a,
            tag: &tag_a,
            build_args: &no_args,
            labels: &labels_a,
        },
    )
    .await;
    let a = built(result);
    assert!(a.image_id.starts_with("sha256:"), "{}", a.image_id);

    let child = |level: &str| {
        format!(
            "ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nRUN test -f /level-a && echo {level} > /level-{level}\n"
        )
    };
    let tag_b = unique_tag("chain-b");
    let args_b = map(&[("BASE_IMAGE", &a.image_id)]);
    let labels_b = map(&[("labforge.image", "chain-b"), ("labforge.level", "1")]);
    let empty = BTreeMap::new();
    let (result, streamed_b) = build(
        &engine,
        &mut images,
        &BuildRequest {
            image: "chain-b",
            dockerfile: &child("b"),
            context: &empty,
            tag: &tag_b,
            build_args: &args_b,
            labels: &labels_b,
        },
    )
    .await;
    let b = built(result);

    let tag_c = unique_tag("chain-c");
    let args_c = map(&[("BASE_IMAGE", &b.image_id)]);
    let labels_c = map(&[("labforge.image", "chain-c"), ("labforge.level", "2")]);
    let (result, streamed_c) = build(
        &engine,
        &mut images,
        &BuildRequest {
            image: "chain-c",
            dockerfile: &child("c"),
            context: &empty,
            tag: &tag_c,
            build_args: &args_c,
            labels: &labels_c,
        },
    )
    .await;
    let c = built(result);
    eprintln!("three builds in {:?}", started.elapsed());

    // Each image is tagged, has its own id and carries its own labels.
    let mut ids = Vec::new();
    for (tag, built, labels, streamed) in [
        (&tag_a, &a, &labels_a, &streamed_a),
        (&tag_b, &b, &labels_b, &streamed_b),
        (&tag_c, &c, &labels_c, &streamed_c),
    ] {
        let info = engine
            .inspect_image(tag)
            .await
            .expect("inspect")
            .unwrap_or_else(|| panic!("{tag} is missing"));
        assert_eq!(info.id, built.image_id, "{tag}");
        assert!(info.tags.contains(tag), "{:?}", info.tags);
        for (k, v) in labels {
            assert_eq!(info.labels.get(k), Some(v), "{tag} label {k}");
        }
        assert_eq!(
            engine.image_id(tag).await.expect("image_id"),
            Some(built.image_id.clone())
        );
        // The streamed lines are the log, and hold the Step lines.
        assert_eq!(streamed, &built.log, "{tag}");
        assert!(
            streamed.iter().any(|l| l.starts_with("Step 1/")),
            "{tag}: {streamed:#?}"
        );
        ids.push(built.image_id.clone());
    }
    assert!(streamed_a.iter().any(|l| l.contains("COPY greeting.txt")));
    assert!(streamed_b.iter().any(|l| l.contains("FROM ${BASE_IMAGE}")));
    ids.dedup();
    assert_eq!(ids.len(), 3, "three distinct images");

    // C really stands on B on A.
    let run = engine
        .run_test(
            &tag_c,
            "cat /greeting.txt /level-a /level-b /level-c",
            Duration::from_secs(30),
        )
        .await
        .expect("run");
    assert_eq!(run.exit_code, Some(0), "{}", run.output);
    assert_eq!(
        run.output, "hello from A\nhello from A\nb\nc\n",
        "{}",
        run.output
    );
}

#[tokio::test]
async fn a_failing_run_is_reported_and_a_concurrent_sibling_still_builds() {
    let engine = engine().await;
    let mut images = Images::default();
    let no_args = BTreeMap::new();
    let labels = map(&[("labforge.test", "failure")]);

    let broken_tag = unique_tag("broken");
    let broken_context = files(&[("note.txt", b"before the failure\n")]);
    let broken_dockerfile =
        format!("FROM {BUSYBOX}\nCOPY note.txt /note.txt\nRUN echo about to fail\nRUN exit 3\n");
    let broken = BuildRequest {
        image: "broken",
        dockerfile: &broken_dockerfile,
        context: &broken_context,
        tag: &broken_tag,
        build_args: &no_args,
        labels: &labels,
    };
    let sibling_tag = unique_tag("sibling");
    let sibling_context = files(&[("data.txt", b"sibling\n")]);
    let sibling_dockerfile =
        format!("FROM {BUSYBOX}\nCOPY data.txt /data.txt\nRUN sleep 1 && cat /data.txt\n");
    let sibling = BuildRequest {
        image: "sibling",
        dockerfile: &sibling_dockerfile,
        context: &sibling_context,
        tag: &sibling_tag,
        build_args: &no_args,
        labels: &labels,
    };
    images.add(&broken_tag);
    images.add(&sibling_tag);

    let started = Instant::now();
    let mut broken_lines = Vec::new();
    let mut sibling_lines = Vec::new();
    let mut on_broken = |l: &str| broken_lines.push(l.to_string());
    let mut on_sibling = |l: &str| sibling_lines.push(l.to_string());
    let (broken_result, sibling_result) = tokio::join!(
        engine.build(&broken, &mut on_broken),
        engine.build(&sibling, &mut on_sibling)
    );
    eprintln!("two concurrent builds in {:?}", started.elapsed());

    match broken_result {
        Err(EngineError::BuildFailed {
            image,
            instruction,
            message,
            tail,
        }) => {
            assert_eq!(image, "broken");
            let instruction = instruction.expect("the failing step");
            assert!(
                instruction.starts_with("Step ") && instruction.ends_with(": RUN exit 3"),
                "{instruction}"
            );
            assert!(message.contains("returned a non-zero code: 3"), "{message}");
            assert!(!tail.is_empty() && tail.len() <= 20, "{tail:#?}");
            assert!(tail.iter().any(|l| l.contains("RUN exit 3")), "{tail:#?}");
            assert!(tail.iter().any(|l| l.contains(&message)), "{tail:#?}");
            assert_eq!(tail.last(), broken_lines.last());
            // The good steps before ran.
            assert!(
                broken_lines.iter().any(|l| l == "about to fail"),
                "{broken_lines:#?}"
            );
            let text = EngineError::BuildFailed {
                image,
                instruction: Some(instruction),
                message,
                tail,
            }
            .to_string();
            assert!(
                text.starts_with("broken: ") && text.contains("RUN exit 3"),
                "{text}"
            );
        }
        Err(e) => panic!(
            "expected BuildFailed, got {}",
            labforge_core::error_chain(&e)
        ),
        Ok(b) => panic!("the broken build succeeded: {}", b.image_id),
    }
    assert_eq!(engine.image_id(&broken_tag).await.expect("inspect"), None);

    // The intermediate images of the good steps stay as the engine's build
    // cache; remove them too (best effort: another build may use them).
    let base = engine
        .image_id(BUSYBOX)
        .await
        .expect("inspect")
        .expect("the busybox stand-in");
    for line in &broken_lines {
        if let Some(id) = line.strip_prefix(" ---> ")
            && id.len() == 12
            && id.bytes().all(|b| b.is_ascii_hexdigit())
            && !base.contains(id)
        {
            images.add(id);
        }
    }

    // A Dockerfile the engine cannot parse is refused before the build
    // starts (HTTP 400, not an error in the stream): a BuildFailed too.
    let unparsable_tag = unique_tag("unparsable");
    images.add(&unparsable_tag);
    let unparsable_dockerfile = format!("FROM {BUSYBOX}\nBOGUS instruction\n");
    let mut lines = Vec::new();
    let mut on_line = |l: &str| lines.push(l.to_string());
    let result = engine
        .build(
            &BuildRequest {
                image: "unparsable",
                dockerfile: &unparsable_dockerfile,
                context: &BTreeMap::new(),
                tag: &unparsable_tag,
                build_args: &no_args,
                labels: &labels,
            },
            &mut on_line,
        )
        .await;
    match result {
        Err(EngineError::BuildFailed {
            instruction,
            message,
            tail,
            ..
        }) => {
            assert_eq!(instruction, None);
            assert!(message.contains("BOGUS"), "{message}");
            assert_eq!(tail, lines);
        }
        Err(e) => panic!(
            "expected BuildFailed, got {}",
            labforge_core::error_chain(&e)
        ),
        Ok(b) => panic!("the unparsable build succeeded: {}", b.image_id),
    }

    let sibling = built(sibling_result);
    assert_eq!(
        engine.image_id(&sibling_tag).await.expect("inspect"),
        Some(sibling.image_id.clone())
    );
    assert!(
        sibling_lines.iter().any(|l| l == "sibling"),
        "{sibling_lines:#?}"
    );
}

#[tokio::test]
async fn the_context_tar_is_deterministic_and_scripts_stay_executable() {
    let context = files(&[
        (
            "files/bin/hello.sh",
            b"#!/bin/sh\necho hello from a script\n",
        ),
        ("files/data/notes.txt", b"plain data\n"),
        ("requirements.txt", b"numpy==2.1.0\n"),
    ]);
    let dockerfile = format!(
        "FROM {BUSYBOX}\nCOPY files/ /opt/lab/\nCOPY requirements.txt /opt/lab/requirements.txt\n"
    );
    let first = context_tar(&dockerfile, &context).expect("tar");
    let second = context_tar(&dockerfile, &context).expect("tar");
    assert_eq!(first, second, "same input, same bytes");
    let mut changed = context.clone();
    changed.insert("requirements.txt".into(), b"numpy==2.1.1\n".to_vec());
    assert_ne!(first, context_tar(&dockerfile, &changed).expect("tar"));

    let engine = engine().await;
    let mut images = Images::default();
    let tag = unique_tag("modes");
    let (result, _) = build(
        &engine,
        &mut images,
        &BuildRequest {
            image: "modes",
            dockerfile: &dockerfile,
            context: &context,
            tag: &tag,
            build_args: &BTreeMap::new(),
            labels: &BTreeMap::new(),
        },
    )
    .await;
    built(result);
    let run = engine
        .run_test(
            &tag,
            "stat -c '%a %u:%g %n' /opt/lab/bin /opt/lab/bin/hello.sh /opt/lab/data/notes.txt /opt/lab/requirements.txt \
             && test -x /opt/lab/bin/hello.sh && ! test -x /opt/lab/data/notes.txt && /opt/lab/bin/hello.sh",
            Duration::from_secs(30),
        )
        .await
        .expect("run");
    assert_eq!(run.exit_code, Some(0), "{}", run.output);
    assert_eq!(
        run.output,
        "755 0:0 /opt/lab/bin\n\
         755 0:0 /opt/lab/bin/hello.sh\n\
         644 0:0 /opt/lab/data/notes.txt\n\
         644 0:0 /opt/lab/requirements.txt\n\
         hello from a script\n"
    );
}

#[tokio::test]
async fn smoke_tests_capture_output_and_exit_codes_and_time_out_cleanly() {
    let engine = engine().await;
    let mut images = Images::default();
    // An image of this test's own, so the label filter below sees only its containers.
    let tag = unique_tag("smoke");
    let (result, _) = build(
        &engine,
        &mut images,
        &BuildRequest {
            image: "smoke",
            dockerfile: &format!("FROM {BUSYBOX}\nUSER 1234\n"),
            context: &BTreeMap::new(),
            tag: &tag,
            build_args: &BTreeMap::new(),
            labels: &map(&[("labforge.test", &tag)]),
        },
    )
    .await;
    built(result);

    let started = Instant::now();
    let run = engine
        .run_test(
            &tag,
            "echo to-stdout; echo to-stderr >&2; id -u; cat /proc/net/dev; exit 7",
            Duration::from_secs(30),
        )
        .await
        .expect("run");
    eprintln!("a smoke test in {:?}", started.elapsed());
    assert_eq!(run.exit_code, Some(7), "{}", run.output);
    assert!(!run.timed_out);
    assert!(run.output.contains("to-stdout\n"), "{}", run.output);
    assert!(run.output.contains("to-stderr\n"), "{}", run.output);
    assert!(
        run.output.contains("\n1234\n"),
        "runs as the image's user: {}",
        run.output
    );
    assert!(run.output.contains("lo:"), "{}", run.output);
    assert!(!run.output.contains("eth0"), "no network: {}", run.output);

    let ok = engine
        .run_test(&tag, "true", Duration::from_secs(30))
        .await
        .expect("run");
    assert_eq!(
        (ok.exit_code, ok.timed_out, ok.output.as_str()),
        (Some(0), false, "")
    );

    let started = Instant::now();
    let slow = engine
        .run_test(&tag, "echo started; sleep 30", Duration::from_secs(2))
        .await
        .expect("run");
    let took = started.elapsed();
    eprintln!("a timed-out smoke test in {took:?}");
    assert!(slow.timed_out);
    assert_eq!(slow.exit_code, None);
    assert!(slow.output.contains("started"), "{}", slow.output);
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");

    let left = engine
        .smoke_test_containers(Some(&tag))
        .await
        .expect("list containers");
    assert!(left.is_empty(), "containers left behind: {left:?}");

    // A missing image is an API error, and leaves nothing behind either.
    let missing = unique_tag("missing");
    let err = engine
        .run_test(&missing, "true", Duration::from_secs(5))
        .await
        .expect_err("no such image");
    assert!(matches!(err, EngineError::Api { .. }), "{err}");
    assert_eq!(engine.image_id(&missing).await.expect("inspect"), None);
}
