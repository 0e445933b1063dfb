//! Ed25519 signing for verify messages, with a domain string per message kind so a signature on one kind can
//! never be replayed as another.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use types::PeerId;

use crate::wire::Signature64;

/// Domain of a trainer's commitment signature.
pub const DOMAIN_COMMITMENT: &[u8] = b"commonweight/verify/commitment/v1";
/// Domain of a verifier's verdict signature.
pub const DOMAIN_VERDICT: &[u8] = b"commonweight/verify/verdict/v1";
/// Domain of a verifier's fraud-proof signature.
pub const DOMAIN_FRAUD_PROOF: &[u8] = b"commonweight/verify/fraud-proof/v1";

/// A node's Ed25519 key. Its public half is its `PeerId`.
#[derive(Clone)]
pub struct NodeKey {
    signing: SigningKey,
}

impl NodeKey {
    /// The key from its 32 secret bytes (the caller owns key storage and randomness).
    pub fn from_secret(secret: [u8; 32]) -> NodeKey {
        NodeKey {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    pub fn peer_id(&self) -> PeerId {
        PeerId(self.signing.verifying_key().to_bytes())
    }

    pub fn sign(&self, domain: &[u8], message: &[u8]) -> Signature64 {
        Signature64(self.signing.sign(&domained(domain, message)).to_bytes())
    }
}

/// True when `signature` is `peer`'s signature of `message` under `domain`. Strict verification: no malleable
/// signatures, no small-order keys.
pub fn signature_valid(
    peer: &PeerId,
    domain: &[u8],
    message: &[u8],
    signature: &Signature64,
) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(&peer.0) else {
        return false;
    };
    let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
    key.verify_strict(&domained(domain, message), &signature)
        .is_ok()
}

fn domained(domain: &[u8], message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + 1 + message.len());
    out.extend_from_slice(domain);
    out.push(0);
    out.extend_from_slice(message);
    out
}
