//! `labforge sbom`, `labforge scan-report` and `labforge diff`: read the
//! SBOM and scan report attached to an image in the registry (OCI
//! referrers) and show them; `sbom --engine` makes an SBOM from an image in
//! the local Docker Engine instead.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use labforge_builder::engine::Engine;
use labforge_builder::push::LayerSource;
use labforge_builder::scan::layers;
use labforge_builder::scan::referrers::{self, Referrers};
use labforge_builder::{ImageRef, RegistryClient, RegistryOptions};
use labforge_core::scan::cyclonedx::{self, Subject};
use labforge_core::scan::diff::{self, PackageDiff};
use labforge_core::scan::policy::{Decision, Report};

#[derive(Args)]
pub struct ImageArgs {
    /// A catalog image (notebook-scipy-cpu), optionally @sha256:… or :TAG;
    /// or a full reference HOST/PATH[:TAG|@DIGEST]. Without a digest or tag:
    /// the image's published version (its <variant> tag)
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Registry the catalog images are in, HOST[:PORT][/PREFIX], instead of the catalog's
    #[arg(long, env = "LABFORGE_REGISTRY", value_name = "TARGET")]
    pub registry: Option<String>,
}

#[derive(Args)]
pub struct SbomArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Make the SBOM from this image in the local Docker Engine (a reference
    /// or ID) instead of reading the one attached in the registry
    #[arg(long, conflicts_with = "table")]
    pub engine: bool,
    /// Print a package table instead of the CycloneDX JSON
    #[arg(long)]
    pub table: bool,
    /// Write the SBOM to FILE instead of stdout
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Print the report as attached (JSON)
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct DiffArgs {
    /// A catalog image (notebook-scipy-cpu) or a repository HOST/PATH
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// The older version: a digest (sha256:…) or a tag
    #[arg(value_name = "OLD")]
    pub old: String,
    /// The newer version: a digest (sha256:…) or a tag
    #[arg(value_name = "NEW")]
    pub new: String,
    /// Registry the catalog images are in, HOST[:PORT][/PREFIX], instead of the catalog's
    #[arg(long, env = "LABFORGE_REGISTRY", value_name = "TARGET")]
    pub registry: Option<String>,
    /// Print the difference as JSON
    #[arg(long)]
    pub json: bool,
}

/// An image resolved to its repository and a reference in it.
pub struct Resolved {
    /// `host/path`
    pub repository: String,
    pub image_ref: ImageRef,
}

/// What the binary knows about the catalog, for resolving image names.
pub struct Catalog {
    /// The catalog, when it loads (full references work without one).
    pub analyzed: Option<labforge_core::Analyzed>,
    pub registry: Option<labforge_core::catalog::Registry>,
    pub options: RegistryOptions,
}

/// `notebook-scipy-cpu[@sha256:…|:tag]` or `host/path[:tag|@digest]`.
pub fn resolve(catalog: &Catalog, text: &str) -> Result<Resolved> {
    let (name, reference) = split_reference(text);
    if name.contains('/') {
        return Ok(Resolved {
            repository: name.to_string(),
            image_ref: ImageRef::in_repository(name, reference.unwrap_or("latest")),
        });
    }
    let analyzed = catalog.analyzed.as_ref().with_context(|| {
        format!("{name:?} is not HOST/PATH and there is no catalog to look it up in")
    })?;
    let Some(image) = analyzed.catalog.image(name) else {
        bail!(
            "there is no image {name:?} in the catalog; `labforge validate --list` lists them, or give HOST/PATH"
        );
    };
    let registry = catalog.registry.clone().context(
        "no registry: set `registry` in catalog.yaml or labforge.toml, or pass --registry",
    )?;
    Ok(Resolved {
        repository: registry.repository(&image.repository),
        image_ref: ImageRef {
            registry: registry.host.clone(),
            repository: registry.path(&image.repository),
            reference: reference.unwrap_or(&image.variant).to_string(),
        },
    })
}

/// Split `name@digest` or `name:tag` (a `:` after the last `/` only).
fn split_reference(text: &str) -> (&str, Option<&str>) {
    if let Some((name, digest)) = text.split_once('@') {
        return (name, Some(digest));
    }
    let slash = text.rfind('/').map_or(0, |i| i + 1);
    match text[slash..].rfind(':') {
        Some(i) => (&text[..slash + i], Some(&text[slash + i + 1..])),
        None => (text, None),
    }
}

/// The digest `resolved` names (a tag is looked up in the registry).
async fn digest_of(resolved: &Resolved, options: &RegistryOptions) -> Result<String> {
    let reference = &resolved.image_ref.reference;
    if reference.starts_with("sha256:") {
        return Ok(reference.clone());
    }
    let client = RegistryClient::new(options.clone(), &[resolved.image_ref.registry.as_str()])?;
    match client.manifest_digest(&resolved.image_ref).await? {
        Some(d) => Ok(d),
        None => bail!(
            "{}:{reference} is not in the registry (an image is tagged <variant> only once it passed the scan gate; give @sha256:… for another version)",
            resolved.repository
        ),
    }
}

async fn fetch(
    resolved: &Resolved,
    options: &RegistryOptions,
    artifact_type: &str,
    what: &str,
) -> Result<(String, Vec<u8>)> {
    let digest = digest_of(resolved, options).await?;
    let referrers = Referrers::new(&resolved.image_ref.registry, options.clone())?;
    match referrers
        .fetch(&resolved.repository, &digest, artifact_type)
        .await?
    {
        Some(f) => Ok((digest, f.payload.to_vec())),
        None => bail!(
            "{}@{digest} has no {what} attached; `labforge build` attaches one when it scans an image",
            resolved.repository
        ),
    }
}

pub async fn sbom(args: &SbomArgs, catalog: &Catalog) -> Result<ExitCode> {
    let bytes = if args.engine {
        let engine = Engine::connect().await?;
        let inv = layers::inventory(&engine, &args.image.image, LayerSource::Auto).await?;
        for w in &inv.collected.warnings {
            eprintln!("warning: {w}");
        }
        eprintln!(
            "{} packages from {} layers ({}, {} bytes read)",
            inv.collected.inventory.packages.len(),
            inv.layers,
            inv.source_used,
            inv.bytes_read
        );
        cyclonedx::to_json(
            &inv.collected.inventory,
            &Subject {
                name: args.image.image.clone(),
                digest: inv.image_id.clone(),
                tags: Vec::new(),
                timestamp: labforge_builder::state::format_rfc3339(
                    labforge_builder::state::unix_ms_now(),
                ),
                tool_version: env!("CARGO_PKG_VERSION").to_string(),
            },
        )
    } else {
        let resolved = resolve(catalog, &args.image.image)?;
        let (_, payload) = fetch(
            &resolved,
            &catalog.options,
            referrers::SBOM_ARTIFACT_TYPE,
            "SBOM",
        )
        .await?;
        payload
    };
    if args.table {
        let inv = cyclonedx::from_json(&bytes)?;
        crate::print_table(
            &["KIND", "NAME", "VERSION", "PATH"],
            inv.packages
                .iter()
                .map(|p| {
                    vec![
                        p.kind.to_string(),
                        p.name.clone(),
                        p.version.clone(),
                        p.path.clone(),
                    ]
                })
                .collect(),
        );
        return Ok(ExitCode::SUCCESS);
    }
    match &args.output {
        Some(path) => std::fs::write(path, &bytes)
            .with_context(|| format!("writing the SBOM to {}", path.display()))?,
        None => std::io::stdout()
            .write_all(&bytes)
            .context("writing the SBOM to stdout")?,
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn scan_report(args: &ReportArgs, catalog: &Catalog) -> Result<ExitCode> {
    let resolved = resolve(catalog, &args.image.image)?;
    let (digest, payload) = fetch(
        &resolved,
        &catalog.options,
        referrers::REPORT_ARTIFACT_TYPE,
        "scan report",
    )
    .await?;
    let report: Report = serde_json::from_slice(&payload).with_context(|| {
        format!(
            "the scan report attached to {}@{digest} is not a labforge report",
            resolved.repository
        )
    })?;
    if args.json {
        std::io::stdout()
            .write_all(&payload)
            .context("writing the report to stdout")?;
    } else {
        print_report(&report);
    }
    Ok(match report.verdict {
        labforge_core::scan::policy::Verdict::Pass => ExitCode::SUCCESS,
        labforge_core::scan::policy::Verdict::Fail => ExitCode::from(1),
    })
}

fn print_report(r: &Report) {
    println!("{}@{}", r.repository, r.digest);
    println!(
        "verdict: {} ({} package(s); {}), scanned {}",
        match r.verdict {
            labforge_core::scan::policy::Verdict::Pass => "pass",
            labforge_core::scan::policy::Verdict::Fail => "FAIL",
        },
        r.packages,
        r.summary,
        r.created
    );
    for s in &r.scanners {
        match &s.error {
            None => println!(
                "scanner {}: {} findings in {} ms ({})",
                s.name, s.findings, s.duration_ms, s.detail
            ),
            Some(e) => println!("scanner {}: DID NOT FINISH: {e}", s.name),
        }
    }
    println!(
        "policy: block {} and above{}, unknown severity counts as {}, {} waiver(s)",
        r.policy.severity,
        if r.policy.fixed_only {
            " when a fix exists"
        } else {
            ""
        },
        r.policy.unknown_severity,
        r.policy.waivers.len()
    );
    for reason in &r.reasons {
        println!("  blocking: {reason}");
    }
    if r.findings.is_empty() {
        println!("no findings");
        return;
    }
    println!();
    crate::print_table(
        &[
            "SEVERITY",
            "ID",
            "KIND",
            "PACKAGE",
            "INSTALLED",
            "FIXED",
            "DECISION",
        ],
        r.findings
            .iter()
            .map(|j| {
                vec![
                    if j.finding.severity == labforge_core::scan::Severity::Unknown {
                        format!("{} (unknown)", j.effective_severity)
                    } else {
                        j.effective_severity.to_string()
                    },
                    j.finding.id.clone(),
                    j.finding.kind.to_string(),
                    j.finding.package.clone(),
                    j.finding.installed.clone(),
                    j.finding.fixed.clone().unwrap_or_else(|| "-".into()),
                    match &j.decision {
                        Decision::Blocking => "BLOCKING".into(),
                        Decision::BelowThreshold => "below threshold".into(),
                        Decision::NoFix => "no fix yet".into(),
                        Decision::Waived {
                            approved_by,
                            expires,
                            ..
                        } => format!("waived by {approved_by} until {expires}"),
                    },
                ]
            })
            .collect(),
    );
}

pub async fn diff(args: &DiffArgs, catalog: &Catalog) -> Result<ExitCode> {
    let at = |reference: &str| {
        let text = if reference.starts_with("sha256:") {
            format!("{}@{reference}", args.image)
        } else {
            format!("{}:{reference}", args.image)
        };
        resolve(catalog, &text)
    };
    let (old, new) = (at(&args.old)?, at(&args.new)?);
    let read = |resolved: Resolved| async move {
        let (digest, payload) = fetch(
            &resolved,
            &catalog.options,
            referrers::SBOM_ARTIFACT_TYPE,
            "SBOM",
        )
        .await?;
        let inv = cyclonedx::from_json(&payload).with_context(|| {
            format!(
                "the SBOM attached to {}@{digest} is not CycloneDX JSON labforge can read",
                resolved.repository
            )
        })?;
        anyhow::Ok((digest, inv))
    };
    let (old_digest, old_inv) = read(old).await?;
    let (new_digest, new_inv) = read(new).await?;
    let d = diff::diff(&old_inv, &new_inv);
    if args.json {
        let doc = serde_json::json!({
            "image": args.image,
            "old": old_digest,
            "new": new_digest,
            "diff": d,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} {old_digest} → {new_digest}", args.image);
    print_diff(&d);
    Ok(ExitCode::SUCCESS)
}

fn print_diff(d: &PackageDiff) {
    if d.is_empty() {
        println!("no package changed");
        return;
    }
    let mut rows = Vec::new();
    for p in &d.added {
        rows.push(vec![
            "added".into(),
            p.kind.to_string(),
            p.name.clone(),
            "-".into(),
            p.version.clone(),
        ]);
    }
    for p in &d.removed {
        rows.push(vec![
            "removed".into(),
            p.kind.to_string(),
            p.name.clone(),
            p.version.clone(),
            "-".into(),
        ]);
    }
    for (what, changes) in [
        ("upgraded", &d.upgraded),
        ("downgraded", &d.downgraded),
        ("changed", &d.changed),
    ] {
        for c in changes {
            rows.push(vec![
                what.into(),
                c.kind.to_string(),
                c.name.clone(),
                c.old.clone(),
                c.new.clone(),
            ]);
        }
    }
    crate::print_table(&["CHANGE", "KIND", "PACKAGE", "OLD", "NEW"], rows);
    println!(
        "{} added, {} removed, {} upgraded, {} downgraded, {} changed",
        d.added.len(),
        d.removed.len(),
        d.upgraded.len(),
        d.downgraded.len(),
        d.changed.len()
    );
}

#[cfg(test)]
mod tests {
    use super::split_reference;

    #[test]
    fn references_split_at_the_right_place() {
        assert_eq!(split_reference("nb-cpu"), ("nb-cpu", None));
        assert_eq!(
            split_reference("nb-cpu@sha256:ab"),
            ("nb-cpu", Some("sha256:ab"))
        );
        assert_eq!(split_reference("nb-cpu:old"), ("nb-cpu", Some("old")));
        assert_eq!(
            split_reference("127.0.0.1:5000/lf/nb:cpu"),
            ("127.0.0.1:5000/lf/nb", Some("cpu"))
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/lf/nb"),
            ("127.0.0.1:5000/lf/nb", None)
        );
    }
}
