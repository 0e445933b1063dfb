//! The node's Ed25519 identity: created on first start, stored with 0600 permissions, and mapped
//! to and from `types::PeerId` (the 32-byte public key).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use libp2p::identity::{ed25519, Keypair, PublicKey};
use types::limits::net as limits;

/// The identity file inside a node's data dir.
pub const IDENTITY_FILE_NAME: &str = "identity.key";
const IDENTITY_FILE_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read identity file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write identity file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("identity file {path} has {len} bytes, expected {expected}")]
    Length {
        path: PathBuf,
        len: usize,
        expected: usize,
    },
    #[error("identity file {path} has version {version}, expected {IDENTITY_FILE_VERSION}")]
    Version { path: PathBuf, version: u8 },
    #[error("identity file {path} does not hold a valid Ed25519 secret key")]
    Key { path: PathBuf },
    #[error("identity file {path} is readable by others (mode {mode:o}); it must be 0600")]
    Permissions { path: PathBuf, mode: u32 },
}

/// An Ed25519 keypair: the node's name on the network and its signing key.
#[derive(Clone)]
pub struct Identity {
    pub(crate) keypair: Keypair,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({:?})", self.peer_id())
    }
}

impl Identity {
    /// A fresh random identity (tests and throwaway nodes).
    pub fn generate() -> Identity {
        Identity {
            keypair: Keypair::generate_ed25519(),
        }
    }

    /// An identity from a 32-byte Ed25519 secret (deterministic tests).
    pub fn from_secret(secret: [u8; 32]) -> Identity {
        let mut bytes = secret;
        let key = ed25519::SecretKey::try_from_bytes(&mut bytes)
            .expect("any 32 bytes are an ed25519 secret");
        Identity {
            keypair: Keypair::from(ed25519::Keypair::from(key)),
        }
    }

    /// Loads `DIR/identity.key`, or creates it (mode 0600) if it does not exist.
    pub fn load_or_create(dir: &Path) -> Result<Identity, IdentityError> {
        let path = dir.join(IDENTITY_FILE_NAME);
        if path.exists() {
            return Identity::load(&path);
        }
        let identity = Identity::generate();
        identity.store(&path)?;
        Ok(identity)
    }

    fn load(path: &Path) -> Result<Identity, IdentityError> {
        let err_read = |source| IdentityError::Read {
            path: path.to_owned(),
            source,
        };
        let mode = fs::metadata(path).map_err(err_read)?.permissions();
        let mode = std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let bytes = fs::read(path).map_err(err_read)?;
        if bytes.len() != limits::IDENTITY_FILE_BYTES {
            return Err(IdentityError::Length {
                path: path.to_owned(),
                len: bytes.len(),
                expected: limits::IDENTITY_FILE_BYTES,
            });
        }
        if bytes[0] != IDENTITY_FILE_VERSION {
            return Err(IdentityError::Version {
                path: path.to_owned(),
                version: bytes[0],
            });
        }
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&bytes[1..]);
        let key =
            ed25519::SecretKey::try_from_bytes(&mut secret).map_err(|_| IdentityError::Key {
                path: path.to_owned(),
            })?;
        Ok(Identity {
            keypair: Keypair::from(ed25519::Keypair::from(key)),
        })
    }

    fn store(&self, path: &Path) -> Result<(), IdentityError> {
        use std::os::unix::fs::OpenOptionsExt;
        let err_write = |source| IdentityError::Write {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(err_write)?;
        }
        let mut bytes = Vec::with_capacity(limits::IDENTITY_FILE_BYTES);
        bytes.push(IDENTITY_FILE_VERSION);
        bytes.extend_from_slice(&self.ed25519().to_bytes()[..32]);
        // Write a temporary file with 0600 from the start, then rename: no window where the
        // secret is world-readable, and no half-written identity after a crash.
        let tmp = path.with_extension("key.tmp");
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err_write)?;
        file.write_all(&bytes).map_err(err_write)?;
        file.sync_all().map_err(err_write)?;
        fs::rename(&tmp, path).map_err(err_write)
    }

    fn ed25519(&self) -> ed25519::Keypair {
        self.keypair
            .clone()
            .try_into_ed25519()
            .expect("identities are always ed25519")
    }

    /// This node's id: its Ed25519 public key.
    pub fn peer_id(&self) -> types::PeerId {
        types::PeerId(self.ed25519().public().to_bytes())
    }

    /// Signs `message` with this node's key (a 64-byte Ed25519 signature).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let sig = self.ed25519().sign(message);
        let mut out = [0u8; 64];
        out.copy_from_slice(&sig);
        out
    }
}

/// Checks an Ed25519 signature by `peer` over `message`.
pub fn verify_signature(peer: types::PeerId, message: &[u8], signature: &[u8; 64]) -> bool {
    match ed25519::PublicKey::try_from_bytes(&peer.0) {
        Ok(key) => key.verify(message, signature),
        Err(_) => false,
    }
}

/// libp2p's peer id for a `types::PeerId`, or `None` if the bytes are not an Ed25519 point.
pub(crate) fn to_libp2p(peer: types::PeerId) -> Option<libp2p::PeerId> {
    let key = ed25519::PublicKey::try_from_bytes(&peer.0).ok()?;
    Some(PublicKey::from(key).to_peer_id())
}

/// The `types::PeerId` inside a libp2p peer id, or `None` if it is not an inlined Ed25519 key.
pub(crate) fn from_libp2p(peer: &libp2p::PeerId) -> Option<types::PeerId> {
    let multihash: &libp2p::multihash::Multihash<64> = peer.as_ref();
    // Code 0 is the identity multihash: small keys are inlined, protobuf-encoded.
    if multihash.code() != 0 {
        return None;
    }
    let key = PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    let key = key.try_into_ed25519().ok()?;
    Some(types::PeerId(key.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_maps_both_ways() {
        let id = Identity::generate();
        let p2p = id.keypair.public().to_peer_id();
        assert_eq!(from_libp2p(&p2p), Some(id.peer_id()));
        assert_eq!(to_libp2p(id.peer_id()), Some(p2p));
        assert_eq!(from_libp2p(&libp2p::PeerId::random()), None);
    }

    #[test]
    fn persisted_with_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(IDENTITY_FILE_NAME);
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&path).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        let b = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(a.peer_id(), b.peer_id());
    }

    #[test]
    fn bad_identity_files_are_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE_NAME);
        fs::write(&path, [1u8; 5]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            Identity::load_or_create(dir.path()),
            Err(IdentityError::Length { .. })
        ));
        fs::write(&path, [9u8; 33]).unwrap();
        assert!(matches!(
            Identity::load_or_create(dir.path()),
            Err(IdentityError::Version { .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Identity::load_or_create(dir.path()),
            Err(IdentityError::Permissions { .. })
        ));
    }

    #[test]
    fn signatures_verify() {
        let id = Identity::from_secret([3; 32]);
        let sig = id.sign(b"round 7");
        assert!(verify_signature(id.peer_id(), b"round 7", &sig));
        assert!(!verify_signature(id.peer_id(), b"round 8", &sig));
    }
}
