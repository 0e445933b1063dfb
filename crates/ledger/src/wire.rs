//! Versioned wire types of the ledger: verdicts, fraud proofs and signed transactions.
//!
//! Everything here is hostile input. Decoders check the byte length against `types::limits::ledger`
//! before postcard allocates anything, then check every count and field range, and return a typed
//! [`WireError`]. Signatures are ed25519 over a domain tag plus the canonical (postcard) encoding
//! of the unsigned fields.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use types::limits::ledger as limits;
use types::{Hash32, PeerId, RoundNumber, RunId};

/// Version byte of every ledger wire type defined here.
pub const WIRE_VERSION: u8 = 1;

const VERDICT_DOMAIN: &[u8] = b"commonweight/ledger/verdict/v1";
const TX_DOMAIN: &[u8] = b"commonweight/ledger/tx/v1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{what} is {len} bytes, the limit is {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} has wire version {got}, expected {expected}")]
    Version {
        what: &'static str,
        got: u8,
        expected: u8,
    },
    #[error("{what} does not decode: {detail}")]
    Decode { what: &'static str, detail: String },
    #[error("{what} has trailing bytes after its encoding")]
    Trailing { what: &'static str },
    #[error("{what}: {count} items, the limit is {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("verdict score {0} ppm is above {max}", max = limits::SCORE_PPM_MAX)]
    Score(u32),
    #[error("verdict credits {0} tokens, above the limit")]
    Tokens(u64),
}

/// Decodes one postcard value, with the size check first and no trailing bytes.
pub(crate) fn decode_exact<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    bytes: &[u8],
    max: usize,
) -> Result<T, WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLarge {
            what,
            len: bytes.len(),
            max,
        });
    }
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|e| WireError::Decode {
        what,
        detail: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(WireError::Trailing { what });
    }
    Ok(value)
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard encoding into a Vec cannot fail")
}

/// A verifier's judgement of one peer's update in one round.
///
/// Self-contained: it names the run, round, peer and verifier, and carries the verifier's
/// ed25519 signature over [`Verdict::signing_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub version: u8,
    pub run: RunId,
    pub round: RoundNumber,
    /// The trainer whose update was judged.
    pub peer: PeerId,
    /// The verifier who signs this verdict.
    pub verifier: PeerId,
    pub accepted: bool,
    /// Score weight in parts per million (`0..=SCORE_PPM_MAX`); meaningful when accepted.
    pub score_ppm: u32,
    /// Why the update was rejected (empty when accepted). Bounded by `VERDICT_REASON_BYTES_MAX`.
    pub reason: String,
    /// Tokens the peer trained on in this round, as verified.
    pub tokens_trained: u64,
    #[serde(with = "sig64")]
    pub signature: [u8; 64],
}

impl Verdict {
    /// Builds and signs a verdict. `verifier` is derived from `key`.
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        key: &SigningKey,
        run: RunId,
        round: RoundNumber,
        peer: PeerId,
        accepted: bool,
        score_ppm: u32,
        reason: &str,
        tokens_trained: u64,
    ) -> Verdict {
        let mut verdict = Verdict {
            version: WIRE_VERSION,
            run,
            round,
            peer,
            verifier: PeerId(key.verifying_key().to_bytes()),
            accepted,
            score_ppm,
            reason: reason.to_owned(),
            tokens_trained,
            signature: [0; 64],
        };
        verdict.signature = key.sign(&verdict.signing_bytes()).to_bytes();
        verdict
    }

    /// Domain tag + postcard of every field but the signature.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let unsigned = (
            self.version,
            self.run,
            self.round,
            self.peer,
            self.verifier,
            self.accepted,
            self.score_ppm,
            &self.reason,
            self.tokens_trained,
        );
        let mut bytes = VERDICT_DOMAIN.to_vec();
        bytes.extend_from_slice(&encode(&unsigned));
        bytes
    }

    pub fn signature_is_valid(&self) -> bool {
        verify_signature(&self.verifier, &self.signing_bytes(), &self.signature)
    }

    /// Field ranges that do not need state.
    pub fn check_fields(&self) -> Result<(), WireError> {
        if self.version != WIRE_VERSION {
            return Err(WireError::Version {
                what: "verdict",
                got: self.version,
                expected: WIRE_VERSION,
            });
        }
        if self.score_ppm > limits::SCORE_PPM_MAX {
            return Err(WireError::Score(self.score_ppm));
        }
        if self.tokens_trained > limits::TOKENS_PER_VERDICT_MAX {
            return Err(WireError::Tokens(self.tokens_trained));
        }
        if self.reason.len() > limits::VERDICT_REASON_BYTES_MAX {
            return Err(WireError::TooLarge {
                what: "verdict reason",
                len: self.reason.len(),
                max: limits::VERDICT_REASON_BYTES_MAX,
            });
        }
        Ok(())
    }
}

/// A fraud proof, opaque to the ledger. The `verify` crate defines `body`; the ledger only
/// routes it to a [`crate::FraudProofChecker`] and reads who it accuses of what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FraudProof {
    pub version: u8,
    pub run: RunId,
    pub round: RoundNumber,
    pub accused: PeerId,
    /// The proof's own format tag, chosen by the checker (e.g. 1 = replay bisection).
    pub kind: u16,
    /// The proof itself, at most `FRAUD_PROOF_BYTES_MAX` bytes.
    pub body: Vec<u8>,
}

/// What a transaction asks the ledger to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxBody {
    /// Record verifiers' verdicts on one round; accepted work is minted as shares.
    RecordVerdicts { verdicts: Vec<Verdict> },
    /// Slash the accused for a round, on a fraud proof the checker accepts.
    Slash { proof: FraudProof },
    /// Move shares from the signer to `to`.
    Transfer { to: PeerId, amount: u64 },
    /// Register a checkpoint CID and snapshot the ownership table that produced it.
    /// Only a genesis verifier may sign this.
    RegisterCheckpoint {
        run: RunId,
        round: RoundNumber,
        cid: Hash32,
    },
}

/// A transaction as it travels: versioned, signed by `signer`, ordered by `nonce`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTx {
    pub version: u8,
    /// The ledger this transaction is for (its chain id); stops replay across ledgers.
    pub chain: Hash32,
    pub signer: PeerId,
    /// Must equal the signer's account nonce; it then increments.
    pub nonce: u64,
    pub body: TxBody,
    #[serde(with = "sig64")]
    pub signature: [u8; 64],
}

impl SignedTx {
    pub fn sign(key: &SigningKey, chain: Hash32, nonce: u64, body: TxBody) -> SignedTx {
        let mut tx = SignedTx {
            version: WIRE_VERSION,
            chain,
            signer: PeerId(key.verifying_key().to_bytes()),
            nonce,
            body,
            signature: [0; 64],
        };
        tx.signature = key.sign(&tx.signing_bytes()).to_bytes();
        tx
    }

    pub fn signing_bytes(&self) -> Vec<u8> {
        let unsigned = (
            self.version,
            self.chain,
            self.signer,
            self.nonce,
            &self.body,
        );
        let mut bytes = TX_DOMAIN.to_vec();
        bytes.extend_from_slice(&encode(&unsigned));
        bytes
    }

    pub fn signature_is_valid(&self) -> bool {
        verify_signature(&self.signer, &self.signing_bytes(), &self.signature)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a transaction from a peer and checks every bound that needs no state.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedTx, WireError> {
        let tx: SignedTx = decode_exact("transaction", bytes, limits::TX_BYTES_MAX)?;
        tx.check_fields()?;
        Ok(tx)
    }

    pub fn check_fields(&self) -> Result<(), WireError> {
        if self.version != WIRE_VERSION {
            return Err(WireError::Version {
                what: "transaction",
                got: self.version,
                expected: WIRE_VERSION,
            });
        }
        match &self.body {
            TxBody::RecordVerdicts { verdicts } => {
                if verdicts.len() > limits::VERDICTS_PER_TX_MAX {
                    return Err(WireError::TooMany {
                        what: "verdicts",
                        count: verdicts.len(),
                        max: limits::VERDICTS_PER_TX_MAX,
                    });
                }
                verdicts.iter().try_for_each(Verdict::check_fields)
            }
            TxBody::Slash { proof } => {
                if proof.version != WIRE_VERSION {
                    return Err(WireError::Version {
                        what: "fraud proof",
                        got: proof.version,
                        expected: WIRE_VERSION,
                    });
                }
                if proof.body.len() > limits::FRAUD_PROOF_BYTES_MAX {
                    return Err(WireError::TooLarge {
                        what: "fraud proof",
                        len: proof.body.len(),
                        max: limits::FRAUD_PROOF_BYTES_MAX,
                    });
                }
                Ok(())
            }
            TxBody::Transfer { .. } | TxBody::RegisterCheckpoint { .. } => Ok(()),
        }
    }

    /// Stable id of a transaction: BLAKE3 of its encoding.
    pub fn id(&self) -> Hash32 {
        Hash32::of(&self.to_bytes())
    }
}

/// Serde for 64-byte signatures (serde derives stop at 32-byte arrays): two 32-byte halves,
/// which postcard writes as exactly 64 bytes.
pub(crate) mod sig64 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(value: &[u8; 64], serializer: S) -> Result<S::Ok, S::Error> {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        a.copy_from_slice(&value[..32]);
        b.copy_from_slice(&value[32..]);
        (a, b).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 64], D::Error> {
        let (a, b): ([u8; 32], [u8; 32]) = Deserialize::deserialize(deserializer)?;
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&a);
        out[32..].copy_from_slice(&b);
        Ok(out)
    }
}

/// Verifies an ed25519 signature by `signer`; a malformed key or signature is just "invalid".
pub fn verify_signature(signer: &PeerId, message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(&signer.0) else {
        return false;
    };
    key.verify_strict(message, &Signature::from_bytes(signature))
        .is_ok()
}

pub fn peer_of(key: &SigningKey) -> PeerId {
    PeerId(key.verifying_key().to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn verdict_signature_covers_every_field() {
        let v = Verdict::sign(
            &key(1),
            RunId(Hash32::ZERO),
            RoundNumber(3),
            PeerId([2; 32]),
            true,
            500_000,
            "",
            100,
        );
        assert!(v.signature_is_valid());
        let mut t = v.clone();
        t.tokens_trained += 1;
        assert!(!t.signature_is_valid());
        let mut t = v.clone();
        t.score_ppm += 1;
        assert!(!t.signature_is_valid());
        let mut t = v;
        t.peer = PeerId([3; 32]);
        assert!(!t.signature_is_valid());
    }

    #[test]
    fn tx_round_trip_and_bounds() {
        let tx = SignedTx::sign(
            &key(1),
            Hash32::ZERO,
            0,
            TxBody::Transfer {
                to: PeerId([9; 32]),
                amount: 5,
            },
        );
        let bytes = tx.to_bytes();
        assert_eq!(SignedTx::from_bytes(&bytes).unwrap(), tx);
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            SignedTx::from_bytes(&long),
            Err(WireError::Trailing {
                what: "transaction"
            })
        );
        let huge = vec![0u8; limits::TX_BYTES_MAX + 1];
        assert!(matches!(
            SignedTx::from_bytes(&huge),
            Err(WireError::TooLarge { .. })
        ));
        for cut in 0..bytes.len() {
            assert!(SignedTx::from_bytes(&bytes[..cut]).is_err());
        }
    }
}
