//! Content-addressed storage: BLAKE3 CIDs, bao-verified ranges, erasure coding, audits.

pub mod audit;
pub mod bao;
pub mod cid;
pub mod collection;
pub mod erasure;
pub mod fetch;
pub mod local;
pub mod manifest;
pub mod placement;
pub mod provider;
pub mod repair;

pub use cid::{Cid, CidError};
pub use local::{LocalStore, StoreError};
pub use manifest::{CollectionKind, FileEntry, FileRole, Manifest, ManifestError};
pub use provider::{LocalProvider, PieceProvider, ProviderError, ProviderRecord};
