//! One complete, validated catalog as the hub serves it: every document and
//! its ETag computed once when the snapshot is built, so that a request only
//! copies a reference-counted buffer. Snapshots are immutable; the server
//! swaps them whole ([`crate::Hub`]), so a reader never sees half of one.
//!
//! Building a snapshot is pure: the loader ([`crate::load`]) hands in the
//! catalog, what is published, and what it learnt about each digest.
//!
//! What users are offered ([`Snapshot::published`]) and what the
//! pre-pullers pull ([`Snapshot::pulls`]) are the same versions, except
//! while `[kubernetes.prepull] offer_after` holds a new digest back: the
//! pre-pullers pull it at once, and users are offered it once it is on
//! enough of its nodes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use labforge_core::catalog::{Base, Catalog, Gpus, Image, Memory};
use labforge_core::publish::{Candidate, Offer, Publication};
use labforge_core::scan::Inventory;
use labforge_core::spawner::{self, Entry, SpawnerSettings, Version, Viewer};
use sha2::{Digest, Sha256};

use crate::doc::{
    CatalogDoc, ChangeDoc, ChangesDoc, Declared, ImageDoc, PackageDoc, PendingDoc, RollbackDoc,
    ScanDoc, Unavailable, VersionDoc,
};
use crate::web::path_segment;

/// The issue form people request environments with
/// (`.github/ISSUE_TEMPLATE/<this>` in the catalog repository), and the id
/// of its "based on" field, which the request-a-change link fills in.
pub const ISSUE_FORM: &str = "image-request.yml";
pub const FORM_BASED_ON: &str = "based-on";

/// A response body with its strong ETag.
#[derive(Debug, Clone)]
pub struct Body {
    pub bytes: Bytes,
    /// `"<32 hex of the body's sha256>"`, quotes included.
    pub etag: String,
}

impl Body {
    pub fn new(bytes: Vec<u8>) -> Body {
        let hash = Sha256::digest(&bytes);
        Body {
            etag: format!("\"{}\"", &hex::encode(hash)[..32]),
            bytes: Bytes::from(bytes),
        }
    }
}

/// What the loader learnt about one digest.
#[derive(Debug, Clone, Default)]
pub struct DigestFacts {
    /// The registry has the manifest (checked at load, and periodically).
    pub present: bool,
    /// Compressed size (config and layers).
    pub size: Option<u64>,
    /// The scan that published it.
    pub scan: Option<ScanDoc>,
    /// The packages of its SBOM.
    pub inventory: Option<Arc<Inventory>>,
    /// When the build that pushed it finished (Unix ms), and its content tag.
    pub built_at: Option<i64>,
    pub content_tag: Option<String>,
}

/// The hub's settings that shape the documents.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub spawner: SpawnerSettings,
    /// JupyterHub's public URL, for absolute launch links.
    pub jupyterhub_url: Option<String>,
    /// Members of these see every profile.
    pub staff_groups: BTreeSet<String>,
}

/// Everything a snapshot is built from.
pub struct Inputs<'a> {
    pub generation: u64,
    pub loaded_at_ms: i64,
    pub catalog: &'a Catalog,
    /// By concrete image name.
    pub publications: &'a BTreeMap<String, Publication>,
    /// By digest.
    pub facts: &'a HashMap<String, DigestFacts>,
    pub options: &'a Options,
    /// What users are offered, by concrete image name, when new digests
    /// wait for the pre-pullers (`[kubernetes.prepull] offer_after`);
    /// `None`: every current digest is offered at once.
    pub offers: Option<&'a BTreeMap<String, Offer>>,
}

/// An image the pre-pullers pull.
#[derive(Debug, Clone)]
pub struct Pull {
    pub image: Image,
    /// Its current digest first, whether or not users are offered it yet,
    /// then earlier versions; only those the registry has.
    pub versions: Vec<Version>,
    /// A rollback pin chose the current digest: it is offered at once.
    pub pinned: bool,
    /// While the current digest is held back: the version users are
    /// offered instead (pulled too, so that it stays on the nodes).
    pub offered: Option<Version>,
}

/// The images that have a profile: the catalog entries and their versions.
struct Profiles {
    images: Vec<Image>,
    bases: Vec<Option<Base>>,
    versions: Vec<Vec<Version>>,
}

/// The profile list in both formats.
#[derive(Debug)]
pub struct ProfileBodies {
    pub json: Body,
    pub yaml: Body,
    /// Which profile of the list is the default (its index).
    pub default: Option<usize>,
}

pub struct Snapshot {
    pub generation: u64,
    pub loaded_at_ms: i64,
    /// The full documents (packages and changes included), for the web pages.
    pub catalog: CatalogDoc,
    /// `/api/v1/catalog` (summaries).
    pub catalog_json: Body,
    /// `/api/v1/images/{name}`: index into `catalog.images` and the body.
    images: HashMap<String, (usize, Body)>,
    profiles: Profiles,
    /// The list everyone sees in full (a viewer who may see everything).
    all: Arc<ProfileBodies>,
    /// What the pre-pullers pull, in catalog order.
    pulls: Vec<Pull>,
    /// Lists for viewers who see a subset, by the positions they see.
    filtered: Mutex<HashMap<Vec<usize>, Arc<ProfileBodies>>>,
    /// The same lists by the viewer's groups, so that a repeated viewer is
    /// one lookup instead of a visibility test of every profile.
    by_groups: Mutex<HashMap<Vec<String>, Arc<ProfileBodies>>>,
    options: Options,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("images", &self.catalog.images.len())
            .finish_non_exhaustive()
    }
}

/// Bounded, so that a client making up group names cannot grow it forever:
/// past this many distinct subsets, lists are built per request.
const FILTERED_CACHE_LIMIT: usize = 1024;

impl Snapshot {
    /// Build every document. Fails (with every reason) when the profile
    /// list breaks KubeSpawner's contract: such a list is never served.
    pub fn build(inputs: Inputs<'_>) -> Result<Snapshot, Vec<String>> {
        let Inputs {
            generation,
            loaded_at_ms,
            catalog,
            publications,
            facts,
            options,
            offers,
        } = inputs;
        let mut docs = Vec::new();
        let mut unavailable = Vec::new();
        let mut pulls = Vec::new();
        let mut profiles = Profiles {
            images: Vec::new(),
            bases: Vec::new(),
            versions: Vec::new(),
        };
        for image in &catalog.images {
            let Some(publication) = publications.get(&image.name) else {
                unavailable.push(Unavailable {
                    name: image.name.clone(),
                    reason: "nothing published yet: `labforge build` publishes it once it passes its tests and scan".into(),
                });
                continue;
            };
            let candidates = publication.versions(options.spawner.previous_versions);
            let Some(current) = candidates.first() else {
                unavailable.push(Unavailable {
                    name: image.name.clone(),
                    reason: "no published digest passes its scan any more".into(),
                });
                continue;
            };
            let present = |digest: &str| facts.get(digest).is_some_and(|f| f.present);
            if !present(&current.digest) {
                unavailable.push(Unavailable {
                    name: image.name.clone(),
                    reason: format!(
                        "its published digest {} is missing from the registry {}",
                        current.digest, current.repository
                    ),
                });
                continue;
            }
            let version = |c: &&Candidate| Version {
                digest: c.digest.clone(),
                reference: format!("{}@{}", c.repository, c.digest),
                published_at: c.first_published_at,
            };
            pulls.push(Pull {
                image: image.clone(),
                versions: candidates
                    .iter()
                    .filter(|c| present(&c.digest))
                    .map(version)
                    .collect(),
                pinned: publication.pin.is_some(),
                offered: None,
            });
            let (publication, held) = match offers.and_then(|o| o.get(&image.name)) {
                Some(offer) => (&offer.offered, offer.held.as_ref()),
                None => (publication, None),
            };
            if held.is_some()
                && let (Some(pull), Some(offered)) = (pulls.last_mut(), publication.current())
            {
                pull.offered = Some(version(&offered));
            }
            let candidates = publication.versions(options.spawner.previous_versions);
            let Some(current) = candidates.first() else {
                unavailable.push(Unavailable {
                    name: image.name.clone(),
                    reason: format!(
                        "its first version {} is being pulled onto the nodes it runs on, and is offered once enough of them have it",
                        held.map_or("", |c| c.digest.as_str())
                    ),
                });
                continue;
            };
            if !present(&current.digest) {
                unavailable.push(Unavailable {
                    name: image.name.clone(),
                    reason: format!(
                        "its published digest {} is missing from the registry {}",
                        current.digest, current.repository
                    ),
                });
                continue;
            }
            let versions: Vec<Version> = candidates
                .iter()
                .filter(|c| present(&c.digest))
                .map(version)
                .collect();
            let base = catalog.root_base(image).cloned();
            let mut doc = image_doc(
                catalog,
                image,
                base.as_ref(),
                &versions,
                publication,
                facts,
                options,
            );
            doc.pending = held.map(|c| PendingDoc {
                digest: c.digest.clone(),
                reference: format!("{}@{}", c.repository, c.digest),
                published_at: labforge_builder::state::format_rfc3339(c.first_published_at),
            });
            docs.push(doc);
            profiles.images.push(image.clone());
            profiles.bases.push(base);
            profiles.versions.push(versions);
        }
        // The default profile of the full list is marked on its document.
        let all_positions: Vec<usize> = (0..profiles.images.len()).collect();
        let all = Arc::new(render_profiles(
            &profiles,
            &all_positions,
            &options.spawner,
        )?);
        if let Some(doc) = all.default.and_then(|i| docs.get_mut(i)) {
            doc.default = true;
        }
        let mut images = HashMap::with_capacity(docs.len());
        for (i, doc) in docs.iter().enumerate() {
            let json = serde_json::to_vec_pretty(doc)
                .map_err(|e| vec![format!("image {}: {e}", doc.name)])?;
            images.insert(doc.name.clone(), (i, Body::new(json)));
        }
        let catalog_doc = CatalogDoc {
            generation,
            generated_at: labforge_builder::state::format_rfc3339(loaded_at_ms),
            images: docs,
            unavailable,
        };
        // Without the generation and load time: the ETag changes only when
        // what is published changes, not on every reload (those are in /readyz).
        let summaries = serde_json::json!({
            "images": catalog_doc.images.iter().map(summary).collect::<Vec<_>>(),
            "unavailable": catalog_doc.unavailable,
        });
        let catalog_json = Body::new(
            serde_json::to_vec_pretty(&summaries).map_err(|e| vec![format!("catalog: {e}")])?,
        );
        Ok(Snapshot {
            generation,
            loaded_at_ms,
            catalog: catalog_doc,
            catalog_json,
            images,
            profiles,
            all,
            pulls,
            filtered: Mutex::new(HashMap::new()),
            by_groups: Mutex::new(HashMap::new()),
            options: options.clone(),
        })
    }

    /// `/api/v1/images/{name}`.
    pub fn image(&self, name: &str) -> Option<(&ImageDoc, &Body)> {
        let (i, body) = self.images.get(name)?;
        Some((self.catalog.images.get(*i)?, body))
    }

    /// Every image with a profile and the versions it offers (current
    /// first), in catalog order.
    pub fn published(&self) -> impl Iterator<Item = (&Image, &[Version])> {
        self.profiles
            .images
            .iter()
            .zip(self.profiles.versions.iter().map(Vec::as_slice))
    }

    /// Every image the pre-pullers pull, with the versions to pull
    /// (current first, even while users are not offered it yet).
    pub fn pulls(&self) -> &[Pull] {
        &self.pulls
    }

    /// The number of profiles in the full list.
    pub fn profile_count(&self) -> usize {
        self.profiles.images.len()
    }

    /// Whether a member of `groups` sees every profile.
    pub fn is_staff(&self, groups: &BTreeSet<String>) -> bool {
        groups.iter().any(|g| self.options.staff_groups.contains(g))
    }

    /// The profile list `viewer` may see.
    pub fn profiles(&self, viewer: &Viewer) -> Result<Arc<ProfileBodies>, Vec<String>> {
        if viewer.see_all {
            return Ok(Arc::clone(&self.all));
        }
        let groups: Vec<String> = viewer.groups.iter().cloned().collect();
        if let Some(hit) = self
            .by_groups
            .lock()
            .ok()
            .and_then(|cache| cache.get(&groups).cloned())
        {
            return Ok(hit);
        }
        let bodies = self.profiles_uncached(viewer)?;
        if let Ok(mut cache) = self.by_groups.lock()
            && cache.len() < FILTERED_CACHE_LIMIT
        {
            cache.insert(groups, Arc::clone(&bodies));
        }
        Ok(bodies)
    }

    fn profiles_uncached(&self, viewer: &Viewer) -> Result<Arc<ProfileBodies>, Vec<String>> {
        let positions: Vec<usize> = self
            .profiles
            .images
            .iter()
            .enumerate()
            .filter(|(_, image)| spawner::visible(&image.profile.groups, viewer))
            .map(|(i, _)| i)
            .collect();
        if positions.len() == self.profiles.images.len() {
            return Ok(Arc::clone(&self.all));
        }
        if let Some(hit) = self
            .filtered
            .lock()
            .ok()
            .and_then(|cache| cache.get(&positions).cloned())
        {
            return Ok(hit);
        }
        let bodies = Arc::new(render_profiles(
            &self.profiles,
            &positions,
            &self.options.spawner,
        )?);
        if let Ok(mut cache) = self.filtered.lock()
            && cache.len() < FILTERED_CACHE_LIMIT
        {
            cache.insert(positions, Arc::clone(&bodies));
        }
        Ok(bodies)
    }
}

/// Build, check and serialize the list of the profiles at `positions`.
fn render_profiles(
    profiles: &Profiles,
    positions: &[usize],
    settings: &SpawnerSettings,
) -> Result<ProfileBodies, Vec<String>> {
    let entries: Vec<Entry<'_>> = positions
        .iter()
        .map(|&i| Entry {
            image: &profiles.images[i],
            base: profiles.bases[i].as_ref(),
            versions: &profiles.versions[i],
        })
        .collect();
    let list = spawner::profile_list(&entries, settings);
    let value = serde_json::to_value(&list).map_err(|e| vec![format!("profile list: {e}")])?;
    let violations = spawner::check(&value);
    if !violations.is_empty() {
        return Err(violations
            .iter()
            .map(|v| format!("profile list breaks the KubeSpawner contract at {v}"))
            .collect());
    }
    // From the list itself, not the checked `Value`: that would sort the
    // keys, and the order of `profile_options` is the form's order.
    let json = serde_json::to_vec(&list).map_err(|e| vec![format!("profile list: {e}")])?;
    let yaml = spawner::values_fragment(&list).into_bytes();
    Ok(ProfileBodies {
        json: Body::new(json),
        yaml: Body::new(yaml),
        default: list.iter().position(|p| p.default),
    })
}

/// The summary of an image for `/api/v1/catalog`: no package lists.
fn summary(doc: &ImageDoc) -> ImageDoc {
    let mut doc = doc.clone();
    doc.packages = None;
    for v in &mut doc.versions {
        v.changes = None;
    }
    doc
}

fn image_doc(
    catalog: &Catalog,
    image: &Image,
    base: Option<&Base>,
    versions: &[Version],
    publication: &Publication,
    facts: &HashMap<String, DigestFacts>,
    options: &Options,
) -> ImageDoc {
    let profile = &image.profile;
    let (gpu_choices, gpu_default) = match &profile.gpus {
        None => (Vec::new(), None),
        Some(Gpus::Count(n)) => (vec![*n], Some(*n)),
        Some(Gpus::Choices { choices, default }) => (choices.clone(), Some(*default)),
    };
    let inventory = |digest: &str| facts.get(digest).and_then(|f| f.inventory.clone());
    let current_inventory = versions.first().and_then(|v| inventory(&v.digest));
    let version_docs: Vec<VersionDoc> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let fact = facts.get(&v.digest);
            let changes = versions.get(i + 1).and_then(|older| {
                let new = inventory(&v.digest)?;
                let old = inventory(&older.digest)?;
                Some(changes_doc(&older.digest, &old, &new))
            });
            VersionDoc {
                digest: v.digest.clone(),
                reference: v.reference.clone(),
                published_at: labforge_builder::state::format_rfc3339(v.published_at),
                built_at: fact
                    .and_then(|f| f.built_at)
                    .map(labforge_builder::state::format_rfc3339),
                content_tag: fact.and_then(|f| f.content_tag.clone()),
                size_bytes: fact.and_then(|f| f.size),
                scan: fact.and_then(|f| f.scan.clone()),
                changes,
            }
        })
        .collect();
    let source = catalog
        .settings
        .source
        .as_deref()
        .map(|s| s.trim_end_matches('/'))
        .filter(|s| s.starts_with("https://github.com/"));
    let launch_url = format!(
        "{}/hub/spawn?profile={}",
        options
            .jupyterhub_url
            .as_deref()
            .unwrap_or("")
            .trim_end_matches('/'),
        profile.slug
    );
    ImageDoc {
        name: image.name.clone(),
        family: image.repository.clone(),
        variant: image.variant.clone(),
        axes: image.axes.clone(),
        slug: profile.slug.clone(),
        display_name: profile.display_name.clone(),
        description: if profile.description.is_empty() {
            image.description.clone()
        } else {
            profile.description.clone()
        },
        parent: match &image.parent {
            labforge_core::catalog::ParentRef::Base(b) => b.clone(),
            labforge_core::catalog::ParentRef::Image(i) => i.clone(),
        },
        gpu: profile.gpus.as_ref().is_some_and(|g| g.max() > 0),
        gpu_choices,
        gpu_default,
        cuda: base.and_then(|b| b.cuda.clone()),
        cudnn: base.and_then(|b| b.cudnn.clone()),
        min_driver: base.and_then(|b| b.min_driver.clone()),
        os: base.and_then(|b| b.os.clone()),
        frameworks: frameworks(catalog, image, current_inventory.as_deref()),
        groups: profile.groups.clone(),
        cpu_limit: profile.cpu_limit,
        cpu_guarantee: profile.cpu_guarantee,
        mem_limit: profile.mem_limit.as_ref().map(memory_text),
        mem_guarantee: profile.mem_guarantee.as_ref().map(memory_text),
        owners: image.owners.clone(),
        issue: image.issue,
        issue_url: match (source, image.issue) {
            (Some(s), Some(n)) => Some(format!("{s}/issues/{n}")),
            _ => None,
        },
        declared: Declared {
            apt: image.packages.apt.clone(),
            pip: image.packages.pip.clone(),
            conda: image.packages.conda.clone(),
            vscode_extensions: image.vscode_extensions.clone(),
        },
        launch_url,
        request_change_url: source.map(|s| {
            format!(
                "{s}/issues/new?template={ISSUE_FORM}&title={}&{FORM_BASED_ON}={}",
                path_segment(&format!("Change {}", image.name)),
                path_segment(&image.name)
            )
        }),
        default: false,
        versions: version_docs,
        rollback: publication.pin.as_ref().map(|pin| RollbackDoc {
            from_digest: pin.from_digest.clone(),
            actor: pin.actor.clone(),
            reason: pin.reason.clone(),
            at: labforge_builder::state::format_rfc3339(pin.created_at),
        }),
        pending: None,
        packages: current_inventory.map(|inv| inv.packages.iter().map(package_doc).collect()),
    }
}

fn memory_text(m: &Memory) -> String {
    match m {
        Memory::Bytes(b) => b.to_string(),
        Memory::Text(t) => t.clone(),
    }
}

fn package_doc(p: &labforge_core::scan::Package) -> PackageDoc {
    PackageDoc {
        kind: p.kind.as_str().to_string(),
        name: p.name.clone(),
        version: p.version.clone(),
    }
}

fn changes_doc(against: &str, old: &Inventory, new: &Inventory) -> ChangesDoc {
    let d = labforge_core::scan::diff::diff(old, new);
    let change = |c: &labforge_core::scan::diff::Change| ChangeDoc {
        kind: c.kind.as_str().to_string(),
        name: c.name.clone(),
        old: c.old.clone(),
        new: c.new.clone(),
    };
    ChangesDoc {
        against: against.to_string(),
        added: d.added.iter().map(package_doc).collect(),
        removed: d.removed.iter().map(package_doc).collect(),
        upgraded: d.upgraded.iter().map(change).collect(),
        downgraded: d.downgraded.iter().map(change).collect(),
        changed: d.changed.iter().map(change).collect(),
    }
}

/// Python distributions (PEP 503 names) that mark a framework, and its name.
const FRAMEWORKS: [(&str, &str); 11] = [
    ("torch", "pytorch"),
    ("tensorflow", "tensorflow"),
    ("jax", "jax"),
    ("keras", "keras"),
    ("transformers", "transformers"),
    ("spacy", "spacy"),
    ("scikit-learn", "scikit-learn"),
    ("xgboost", "xgboost"),
    ("lightning", "lightning"),
    ("nbgrader", "nbgrader"),
    ("scipy", "scipy"),
];

/// Frameworks in the image: from its SBOM when there is one, else from what
/// it and its catalog ancestors declare.
fn frameworks(catalog: &Catalog, image: &Image, inventory: Option<&Inventory>) -> Vec<String> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    match inventory {
        Some(inv) => names.extend(
            inv.packages
                .iter()
                .filter(|p| p.kind == labforge_core::scan::PackageKind::Pypi)
                .map(|p| labforge_core::scan::pep440::normalize_name(&p.name)),
        ),
        None => {
            let mut current = Some(image);
            for _ in 0..=catalog.images.len() {
                let Some(i) = current else { break };
                names.extend(
                    i.packages
                        .pip
                        .iter()
                        .chain(&i.packages.conda)
                        .map(|req| requirement_name(req)),
                );
                current = match &i.parent {
                    labforge_core::catalog::ParentRef::Image(p) => catalog.image(p),
                    labforge_core::catalog::ParentRef::Base(_) => None,
                };
            }
        }
    }
    FRAMEWORKS
        .iter()
        .filter(|(dist, _)| names.contains(*dist))
        .map(|(_, framework)| framework.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The normalised distribution name at the start of a requirement line.
fn requirement_name(requirement: &str) -> String {
    let end = requirement
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .unwrap_or(requirement.len());
    labforge_core::scan::pep440::normalize_name(&requirement[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(
            path_segment("Change nb-cpu & ü"),
            "Change%20nb-cpu%20%26%20%C3%BC"
        );
    }

    #[test]
    fn requirement_names_are_normalised() {
        assert_eq!(requirement_name("Scikit_Learn>=1.5"), "scikit-learn");
        assert_eq!(requirement_name("torch==2.5.1"), "torch");
        assert_eq!(requirement_name("spacy"), "spacy");
    }

    #[test]
    fn etags_are_quoted_hashes_of_the_body() {
        let a = Body::new(b"[]".to_vec());
        let b = Body::new(b"[ ]".to_vec());
        assert_ne!(a.etag, b.etag);
        assert_eq!(a.etag.len(), 34);
        assert!(a.etag.starts_with('"') && a.etag.ends_with('"'));
        assert_eq!(a.etag, Body::new(b"[]".to_vec()).etag);
    }
}
