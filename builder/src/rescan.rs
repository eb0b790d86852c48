//! `labforge scan`: scan images that are already in the registry again —
//! against today's advisories, or for the first time when they were pushed
//! before the scan gate existed — without rebuilding them.
//!
//! Each selected image's current content tag is looked up in the registry;
//! its digest is pulled into the engine if the engine lacks it, then it goes
//! through the same stage as a fresh build ([`crate::scan::stage`]): the
//! SBOM and a new report are attached, a pass publishes it (its moving
//! tags, without a new date tag: the digest is not new), a fail records it
//! as not published, which is what the hub's catalog reads. Moving tags are
//! never deleted: they are for humans, and only a passing version moves
//! them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use labforge_core::Analyzed;
use labforge_core::plan::Presence;
use labforge_core::scan::policy::Verdict;

use crate::build::{
    BuildError, BuildSettings, Event, Outcome, Reporter, ScanBrief, ScanDocs, moving_tags, record,
    today,
};
use crate::engine::Engine;
use crate::push;
use crate::registry::{ImageRef, RegistryClient};
use crate::scan::referrers::Referrers;
use crate::scan::stage::{self, Scanners, StageError, Target};
use crate::state::{BuildResult, StateStore};

/// Scan the selected images (all when the selection is empty) as they are
/// in the registry now. Returns one outcome per image, in build order.
pub async fn rescan(
    analyzed: &Analyzed,
    settings: BuildSettings,
    store: &StateStore,
    reporter: Arc<dyn Reporter>,
) -> Result<Rescanned, BuildError> {
    crate::scan::stage::check(&settings.scan)?;
    let catalog = &analyzed.catalog;
    let selected = crate::build::needed(analyzed, &settings.selection)?;
    let wanted: std::collections::BTreeSet<usize> = if settings.selection.is_empty() {
        selected.iter().copied().collect()
    } else {
        // Only the named images, not the ancestors `needed` adds.
        selected
            .iter()
            .copied()
            .filter(|&i| {
                let image = &catalog.images[i];
                settings
                    .selection
                    .iter()
                    .any(|s| s == &image.name || s == &image.repository)
            })
            .collect()
    };
    let (plan, heads) = crate::plan(
        analyzed,
        Some(&settings.registry),
        settings.registry_options.clone(),
        &Default::default(),
        settings.jobs,
    )
    .await?;
    let planned: HashMap<&str, &labforge_core::plan::PlannedImage> =
        plan.images.iter().map(|p| (p.name.as_str(), p)).collect();

    let scan_config = settings.scan.clone();
    let scanners = tokio::task::spawn_blocking(move || Scanners::from_config(&scan_config))
        .await
        .map_err(|e| BuildError::from(StageError::OsvLoad(e.to_string())))??;
    let referrers = Referrers::new(&settings.registry.host, settings.registry_options.clone())?;
    let client = RegistryClient::new(
        settings.registry_options.clone(),
        &[settings.registry.host.as_str()],
    )
    .map_err(BuildError::Client)?;
    let mut engine: Option<Engine> = None;
    let mut outcomes = Vec::new();
    for i in analyzed.graph.order().filter(|i| wanted.contains(i)) {
        let image = &catalog.images[i];
        let Some(p) = planned.get(image.name.as_str()) else {
            continue;
        };
        let target = ImageRef {
            registry: settings.registry.host.clone(),
            repository: settings.registry.path(&image.repository),
            reference: p.tag.clone(),
        };
        let repository = format!("{}/{}", target.registry, target.repository);
        let mut o = Outcome {
            image: image.name.clone(),
            repository: repository.clone(),
            variant: image.variant.clone(),
            hash: p.identity.clone(),
            content_tag: p.tag.clone(),
            result: BuildResult::Failed,
            digest: None,
            tags: Vec::new(),
            reason: String::new(),
            tail: Vec::new(),
            stages: Default::default(),
            tests: Vec::new(),
            log: None,
            base_digests: Default::default(),
            scan: None,
            scan_docs: None,
        };
        let Presence::Present(digest) = &p.registry else {
            o.result = BuildResult::Blocked;
            o.reason = format!(
                "{}:{} is not in the registry: `labforge build {}` builds, scans and publishes it",
                repository, p.tag, image.name
            );
            reporter.event(Event::Done(Box::new(o.clone())));
            outcomes.push(o);
            continue;
        };
        o.digest = Some(digest.clone());
        o.tags = vec![p.tag.clone()];
        reporter.event(Event::Stage {
            image: image.name.clone(),
            stage: "scan",
        });
        let started = Instant::now();
        if engine.is_none() {
            engine = Some(Engine::connect().await?);
        }
        let Some(engine) = &engine else { continue };
        let pinned = format!("{repository}@{digest}");
        let say = |line: String| {
            reporter.event(Event::Line {
                image: image.name.clone(),
                line,
            })
        };
        let image_id = match local_image(engine, &pinned, &settings, &say).await {
            Ok(id) => id,
            Err(e) => {
                o.reason = format!("cannot get {pinned} into the engine: {e}");
                reporter.event(Event::Done(Box::new(o.clone())));
                record(store, &settings, &o).await?;
                outcomes.push(o);
                continue;
            }
        };
        let created = crate::state::format_rfc3339(crate::state::unix_ms_now());
        let say_scan = |line: String| say(format!("scan: {line}"));
        let scanned = stage::scan_from(
            stage::Source::Engine {
                engine,
                image_id: &image_id,
            },
            &scanners,
            &referrers,
            Target {
                image: &image.name,
                repository: &repository,
                digest,
                tags: vec![p.tag.clone()],
                policy: &image.scan,
                created: &created,
                today: today(),
            },
            &say_scan,
        )
        .await;
        o.stages.insert("scan".into(), millis(started.elapsed()));
        let scanned = match scanned {
            Ok(s) => s,
            Err(e) => {
                o.reason = format!("scan failed: {}", labforge_core::error_chain(&e));
                reporter.event(Event::Done(Box::new(o.clone())));
                record(store, &settings, &o).await?;
                outcomes.push(o);
                continue;
            }
        };
        let was_published = store
            .latest_scan(&image.name, Some(digest))
            .await
            .map_err(|source| BuildError::Record {
                image: image.name.clone(),
                source,
            })?
            .is_some_and(|s| s.published);
        o.scan_docs = Some(Arc::new(ScanDocs {
            report: scanned.report_json,
            sbom: scanned.sbom,
        }));
        if scanned.report.verdict == Verdict::Fail {
            o.result = BuildResult::Rejected;
            o.reason = format!(
                "rescanned: rejected by the scan policy ({}){}",
                scanned.report.summary,
                if was_published {
                    "; it was published: it is now recorded as not published (its moving tags stay until a passing version moves them)"
                } else {
                    ""
                }
            );
            o.scan = Some(ScanBrief::of(&scanned.report, false));
        } else {
            let options = settings.push_options();
            match push::tag(
                &client,
                &target,
                digest,
                &moving_tags(image, &settings.date)
                    .into_iter()
                    .filter(|t| !t.ends_with(&format!("-{}", settings.date)))
                    .collect::<Vec<_>>(),
                &options,
                &|_| {},
            )
            .await
            {
                Ok(moved) => {
                    o.tags.extend(moved);
                    o.result = BuildResult::Present;
                    o.reason = format!("rescanned: passes ({})", scanned.report.summary);
                    o.scan = Some(ScanBrief::of(&scanned.report, true));
                }
                Err(e) => {
                    o.reason = format!(
                        "rescanned and passed, but publishing failed: {}",
                        labforge_core::error_chain(&e)
                    );
                    o.scan = Some(ScanBrief::of(&scanned.report, false));
                }
            }
        }
        reporter.event(Event::Done(Box::new(o.clone())));
        record(store, &settings, &o).await?;
        outcomes.push(o);
    }
    Ok(Rescanned {
        outcomes,
        engine_used: engine.is_some(),
        registry_requests: heads,
    })
}

/// What `labforge scan` did.
pub struct Rescanned {
    /// One per selected image, in build order.
    pub outcomes: Vec<Outcome>,
    /// Whether the engine was needed (no image present: not).
    pub engine_used: bool,
    /// Manifest requests the plan made.
    pub registry_requests: usize,
}

/// The engine's image ID for `pinned` (`repo@digest`), pulling it if needed.
async fn local_image(
    engine: &Engine,
    pinned: &str,
    settings: &BuildSettings,
    say: &(dyn Fn(String) + Sync),
) -> Result<String, String> {
    if let Some(id) = engine
        .image_id(pinned)
        .await
        .map_err(|e| labforge_core::error_chain(&e))?
    {
        return Ok(id);
    }
    let login = settings
        .registry_options
        .username
        .clone()
        .zip(settings.registry_options.password.clone());
    let mut on_line = |l: &str| say(format!("pull: {l}"));
    engine
        .pull(pinned, login, &mut on_line)
        .await
        .map_err(|e| labforge_core::error_chain(&e))?;
    engine
        .image_id(pinned)
        .await
        .map_err(|e| labforge_core::error_chain(&e))?
        .ok_or_else(|| "the engine does not list it after the pull".to_string())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
