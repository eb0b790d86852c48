//! Rollback: hold an image at an earlier published digest (by default the
//! one before the current), so users get it while a broken release is
//! fixed. Recorded as a pin in the state store; the next digest published
//! after the pin supersedes it. Used by `labforge rollback` and by
//! `POST /api/v1/images/{name}/rollback`.

use labforge_builder::state::{Pin, StateError, StateStore};
use labforge_core::publish;

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
}

/// What a rollback did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RolledBack {
    pub image: String,
    pub from: String,
    pub to: String,
    pub reference: String,
}

/// Pin `image` to `to` (a published digest), or to the digest before the
/// current one.
pub async fn rollback(
    store: &StateStore,
    image: &str,
    to: Option<&str>,
    actor: &str,
    reason: &str,
) -> Result<RolledBack, RollbackError> {
    let rows: Vec<_> = store
        .scan_rows()
        .await?
        .into_iter()
        .filter(|r| r.image == image)
        .collect();
    let pins = store.latest_pins().await?;
    let publication = publish::select(&rows, pins.iter().find(|p| p.image == image));
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
    store
        .record_pin(&Pin {
            image: image.to_string(),
            digest: target.digest.clone(),
            from_digest: Some(current.digest.clone()),
            actor: actor.to_string(),
            reason: reason.to_string(),
            created_at: labforge_builder::state::unix_ms_now(),
        })
        .await?;
    tracing::info!(image = %image, from = %current.digest, to = %target.digest, actor = %actor, "rolled back");
    Ok(RolledBack {
        image: image.to_string(),
        from: current.digest.clone(),
        to: target.digest.clone(),
        reference: format!("{}@{}", target.repository, target.digest),
    })
}
