//! Verdicts: what a verifier concludes about one update, with the evidence, signed by the verifier.
//!
//! They feed aggregation now (only `included` updates are aggregated) and the ledger later (scored work is minted,
//! a `Fraud` rejection carries the hash of a fraud proof that slashes).

use serde::{Deserialize, Serialize};
use types::limits::verify as limits;
use types::{Hash32, PeerId, RoundNumber, RunId};

use crate::keys::{signature_valid, NodeKey, DOMAIN_VERDICT};
use crate::wire::{self, check_len, Signature64, WireError};

/// Why an update was rejected, with the evidence any node can recheck from the commitment and the blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reason {
    /// The commitment's signature does not verify under its peer id.
    BadSignature,
    /// A second commitment from the same peer in the same round; the first one stands.
    Equivocation {
        first_cid: Hash32,
    },
    WrongRun {
        claimed: RunId,
        expected: RunId,
    },
    WrongRound {
        claimed: RoundNumber,
        expected: RoundNumber,
    },
    /// Built on another model than this round's base; `from_round` names the earlier round whose model it is, if known.
    StaleBase {
        claimed: Hash32,
        expected: Hash32,
        from_round: Option<RoundNumber>,
    },
    /// The committed data ids are not the ones the assignment function gives (digests are BLAKE3 of the LE ids).
    WrongData {
        claimed_digest: Hash32,
        expected_digest: Hash32,
        first_difference: u64,
    },
    WrongCodec {
        claimed: u8,
        expected: u8,
    },
    WrongInnerSteps {
        claimed: u32,
        expected: u32,
    },
    /// The blob is larger than the limit.
    Oversized {
        bytes: u64,
        max: u64,
    },
    SizeMismatch {
        claimed: u64,
        actual: u64,
    },
    CidMismatch {
        claimed: Hash32,
        actual: Hash32,
    },
    /// The same blob was seen before: a replay of an old update.
    Replayed {
        cid: Hash32,
        first_round: RoundNumber,
        first_peer: PeerId,
    },
    /// The blob does not decode under the run's codec.
    Malformed {
        error: String,
    },
    WrongLength {
        got: u64,
        expected: u64,
    },
    /// A NaN or infinity at `index` (raw f32 bits given).
    NonFinite {
        index: u64,
        bits: u32,
    },
    /// Norm is zero (within rounding) against a non-zero round median: a free rider.
    ZeroUpdate {
        norm: f64,
        median_norm: f64,
    },
    /// Norm is an outlier: robust z of its log norm against the round's median and MAD of log norms.
    NormOutlier {
        norm: f64,
        median_norm: f64,
        robust_z: f64,
    },
    /// Near-identical (up to scale and sign) to an update by another peer, this round or an earlier one.
    Copy {
        of_peer: PeerId,
        of_round: RoundNumber,
        cosine: f64,
        topk_jaccard: f64,
    },
    /// A replay spot check proved a wrong step; the proof's BLAKE3 hash names it.
    Fraud {
        proof_hash: Hash32,
        step: u32,
    },
    /// The peer did not serve a committed state for a spot check.
    Withheld {
        step: u32,
    },
}

/// The outcome for one update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// Passed every cheap gate; not scored this round. `included` follows the peer's standing rating.
    Accepted {
        included: bool,
        rating_mean: f64,
    },
    /// Passed every gate and was scored (see `score`); the rating after this round decides `included`.
    Scored {
        score: f64,
        observation: f64,
        rating_mean: f64,
        rating_sd: f64,
        included: bool,
    },
    Rejected(Reason),
}

impl Outcome {
    pub fn included(&self) -> bool {
        match self {
            Outcome::Accepted { included, .. } | Outcome::Scored { included, .. } => *included,
            Outcome::Rejected(_) => false,
        }
    }

    pub fn reason(&self) -> Option<&Reason> {
        match self {
            Outcome::Rejected(reason) => Some(reason),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub run: RunId,
    pub round: RoundNumber,
    pub peer: PeerId,
    pub update_cid: Hash32,
    pub verifier: PeerId,
    pub outcome: Outcome,
}

impl Verdict {
    pub fn sign(self, key: &NodeKey) -> SignedVerdict {
        assert_eq!(
            key.peer_id(),
            self.verifier,
            "a verifier signs its own verdicts"
        );
        let signature = key.sign(DOMAIN_VERDICT, &wire::encode(&self));
        SignedVerdict {
            verdict: self,
            signature,
        }
    }

    fn validate(&self) -> Result<(), WireError> {
        let floats: Vec<f64> = match &self.outcome {
            Outcome::Accepted { rating_mean, .. } => vec![*rating_mean],
            Outcome::Scored {
                score,
                observation,
                rating_mean,
                rating_sd,
                ..
            } => {
                vec![*score, *observation, *rating_mean, *rating_sd]
            }
            Outcome::Rejected(Reason::ZeroUpdate { norm, median_norm }) => {
                vec![*norm, *median_norm]
            }
            Outcome::Rejected(Reason::NormOutlier {
                norm,
                median_norm,
                robust_z,
            }) => {
                vec![*norm, *median_norm, *robust_z]
            }
            Outcome::Rejected(Reason::Copy {
                cosine,
                topk_jaccard,
                ..
            }) => vec![*cosine, *topk_jaccard],
            Outcome::Rejected(Reason::Malformed { error }) => {
                check_len(
                    "malformed.error",
                    error.len(),
                    limits::EVIDENCE_TEXT_BYTES_MAX,
                )?;
                vec![]
            }
            Outcome::Rejected(_) => vec![],
        };
        // Infinite norms are legitimate evidence (an overflowing update); NaN never is.
        if floats.iter().any(|f| f.is_nan()) {
            return Err(WireError::Invalid {
                field: "outcome",
                why: "NaN in a verdict",
            });
        }
        Ok(())
    }
}

/// A verdict with its verifier's signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedVerdict {
    pub verdict: Verdict,
    pub signature: Signature64,
}

impl SignedVerdict {
    pub fn signature_valid(&self) -> bool {
        let v = &self.verdict;
        signature_valid(
            &v.verifier,
            DOMAIN_VERDICT,
            &wire::encode(v),
            &self.signature,
        )
    }

    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Decodes and bounds-checks; does not check the signature.
    pub fn decode(bytes: &[u8]) -> Result<SignedVerdict, WireError> {
        let signed: SignedVerdict = wire::decode(bytes, limits::VERDICT_BYTES_MAX)?;
        signed.verdict.validate()?;
        Ok(signed)
    }
}
