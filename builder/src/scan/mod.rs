//! The scan stage: what is inside a built image (its package inventory and
//! CycloneDX SBOM), what is wrong with it (Trivy and the built-in OSV
//! matcher), and the registry artifacts that keep both next to the image.
//!
//! One module per outside thing: `layers.rs` reads the engine's image layers,
//! `remote.rs` reads them from a registry instead (an image built elsewhere),
//! `trivy.rs` runs the Trivy binary, `osvdb.rs` reads an OSV database
//! folder, `referrers.rs` attaches and reads OCI referrers. The policy itself
//! is pure and lives in `labforge_core::scan::policy`.

pub mod layers;
pub mod osvdb;
pub mod referrers;
pub mod remote;
pub mod stage;
pub mod trivy;

pub use remote::inventory_from_registry;
