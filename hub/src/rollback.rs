//! Rollback: hold an image at an earlier published digest (by default the
//! one before the current), so users get it while a broken release is
//! fixed. Recorded as a pin in the state store; the next digest published
//! after the pin supersedes it. Used by `labforge rollback` and by
//! `POST /api/v1/images/{name}/rollback`.

use labforge_builder::registry::{ImageRef, RegistryClient, RegistryOptions};
use labforge_builder::state::{Pin, StateError, StateStore};
use labforge_core::publish::{self, Publication};

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("{0}")]
    State(#[from] StateError),
    #[error("nothing is published for {image}; `labforge status` lists the images and their state")]
    NothingPublished { image: String },
    #[error(
        "{image} has no earlier published digest to roll back to (current: {current}); pass --to DIGEST to pick one"
    )]
    NoPrevious { image: String, current: String },
    #[error(
        "{digest} is not a published digest of {image} that passes its scan; published digests, newest first: {published}"
    )]
    NotEligible {
        image: String,
        digest: String,
        published: String,
    },
    #[error("{image} is already at {digest}")]
    AlreadyCurrent { image: String, digest: String },
    #[error(
        "{reference} is not in the registry any more, so users could not start it; pick another digest with --to"
    )]
    NotInRegistry { reference: String },
    #[error(
        "cannot check that {reference} is in the registry: {message}; nothing was changed, try again"
    )]
    RegistryCheck { reference: String, message: String },
    #[error(
        "{image} was published again while rolling back ({current} is newer than the rollback); nothing is held, run the rollback again if it is still needed"
    )]
    Superseded { image: String, current: String },
}

/// What a rollback did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RolledBack {
    pub image: String,
    pub from: String,
    pub to: String,
    pub reference: String,
}

async fn publication_of(store: &StateStore, image: &str) -> Result<Publication, StateError> {
    let rows: Vec<_> = store
        .scan_rows()
        .await?
        .into_iter()
        .filter(|r| r.image == image)
        .collect();
    let pins = store.latest_pins().await?;
    Ok(publish::select(
        &rows,
        pins.iter().find(|p| p.image == image),
    ))
}

/// Pin `image` to `to` (a published digest), or to the digest before the
/// current one. With `registry` (how to reach it), the target must still be
/// in the registry.
pub async fn rollback(
    store: &StateStore,
    registry: Option<&RegistryOptions>,
    image: &str,
    to: Option<&str>,
    actor: &str,
    reason: &str,
) -> Result<RolledBack, RollbackError> {
    let publication = publication_of(store, image).await?;
    let Some(current) = publication.current() else {
        return Err(RollbackError::NothingPublished {
            image: image.to_string(),
        });
    };
    let target = match to {
        Some(digest) => publication
            .eligible
            .iter()
            .find(|c| c.digest == digest)
            .ok_or_else(|| RollbackError::NotEligible {
                image: image.to_string(),
                digest: digest.to_string(),
                published: publication
                    .eligible
                    .iter()
                    .map(|c| c.digest.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?,
        None => publication
            .previous()
            .ok_or_else(|| RollbackError::NoPrevious {
                image: image.to_string(),
                current: current.digest.clone(),
            })?,
    };
    if target.digest == current.digest {
        return Err(RollbackError::AlreadyCurrent {
            image: image.to_string(),
            digest: target.digest.clone(),
        });
    }
    let reference = format!("{}@{}", target.repository, target.digest);
    if let Some(options) = registry {
        let image = ImageRef::in_repository(&target.repository, &target.digest);
        let check = |e: labforge_builder::registry::RegistryError| RollbackError::RegistryCheck {
            reference: reference.clone(),
            message: e.to_string(),
        };
        let client =
            RegistryClient::new(options.clone(), &[image.registry.as_str()]).map_err(check)?;
        let found = client.manifest_digest(&image).await.map_err(check)?;
        if found.is_none() {
            return Err(RollbackError::NotInRegistry { reference });
        }
    }
    store
        .record_pin(&Pin {
            image: image.to_string(),
            digest: target.digest.clone(),
            from_digest: Some(current.digest.clone()),
            after_scan: 0,
            actor: actor.to_string(),
            reason: reason.to_string(),
            created_at: labforge_builder::state::unix_ms_now(),
        })
        .await?;
    // A build may have published between the read above and the pin.
    let now = publication_of(store, image).await?;
    if let Some(c) = now.current()
        && c.digest != target.digest
    {
        return Err(RollbackError::Superseded {
            image: image.to_string(),
            current: c.digest.clone(),
        });
    }
    tracing::info!(image = %image, from = %current.digest, to = %target.digest, actor = %actor, "rolled back");
    Ok(RolledBack {
        image: image.to_string(),
        from: current.digest.clone(),
        to: target.digest.clone(),
        reference,
    })
}
