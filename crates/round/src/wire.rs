//! Versioned, signed round messages and their hostile-input decoder.
//!
//! Layout: `[WIRE_VERSION][postcard(WireMessage)]`. Every count is checked against `limits::round` after the
//! size check and before the message reaches the state machine. Signatures are checked by the machine, which
//! knows who is allowed to sign what.

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use types::limits::round as limits;
use types::{Hash32, PeerId, RoundNumber, RunId};

pub const WIRE_VERSION: u8 = 1;

/// An ed25519 signature, split in halves because serde derives arrays only up to 32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub r: [u8; 32],
    pub s: [u8; 32],
}

/// A body plus who signed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed<T> {
    pub body: T,
    pub signer: PeerId,
    pub signature: Signature,
}

/// A trainer's promise, published before its update: binds the update to the round, base model and data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commitment {
    pub run_id: RunId,
    pub round: RoundNumber,
    pub base_model_hash: Hash32,
    pub data_ids: Vec<u32>,
    pub update_cid: Hash32,
    pub update_bytes: u64,
    /// f32 bits of the claimed final inner loss.
    pub claimed_loss_bits: u32,
    pub codec_id: u8,
}

/// The proposer freezes which commitments may be revealed and aggregated this round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitSet {
    pub run_id: RunId,
    pub round: RoundNumber,
    pub rank: u32,
    pub base_model_hash: Hash32,
    /// Sorted by signer, one per trainer.
    pub commitments: Vec<Signed<Commitment>>,
}

/// Why a commitment in the commit set is not aggregated. Every one is accounted for: none is lost silently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Exclusion {
    /// The update did not arrive before the reveal phase closed.
    NotRevealed,
    /// The update arrived and failed verification.
    Rejected,
    /// The update's content id or size does not match the commitment.
    BindingMismatch,
}

/// The proposer's closing statement for a round: the agreed update set and membership changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub run_id: RunId,
    pub round: RoundNumber,
    pub rank: u32,
    pub base_model_hash: Hash32,
    pub commit_set_digest: Hash32,
    /// Trainers whose updates are aggregated, sorted.
    pub included: Vec<PeerId>,
    /// The rest of the commit set, sorted by peer, each with its reason.
    pub excluded: Vec<(PeerId, Exclusion)>,
    /// Peers admitted from the next round on, sorted.
    pub joins: Vec<PeerId>,
    /// Members removed from the next round on, sorted.
    pub leaves: Vec<PeerId>,
}

/// A committee member's statement of the state it reached after applying a proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub run_id: RunId,
    pub round: RoundNumber,
    pub rank: u32,
    pub proposal_digest: Hash32,
    pub state_digest: Hash32,
    /// The state this round started from: already settled, so a node that fell behind can fetch it.
    pub base_digest: Hash32,
}

/// A membership announcement (join or leave), signed by the peer itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    pub run_id: RunId,
    pub round: RoundNumber,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Commit(Signed<Commitment>),
    CommitSet(Signed<CommitSet>),
    Proposal(Signed<Proposal>),
    Vote(Signed<Vote>),
    Join(Signed<Announce>),
    Leave(Signed<Announce>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message is {0} bytes, above the limit of {max}", max = limits::MESSAGE_BYTES_MAX)]
    TooLarge(usize),
    #[error("message is empty")]
    Empty,
    #[error("wire version {0} is not supported (expected {WIRE_VERSION})")]
    Version(u8),
    #[error("message does not decode: {0}")]
    Malformed(String),
    #[error("message has {0} trailing bytes")]
    Trailing(usize),
    #[error("{what} has {count} entries, above the limit of {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("{0} must be sorted and unique")]
    NotSorted(&'static str),
}

fn check_count(what: &'static str, count: usize, max: usize) -> Result<(), DecodeError> {
    if count > max {
        return Err(DecodeError::TooMany { what, count, max });
    }
    Ok(())
}

fn check_sorted<T: Ord>(
    what: &'static str,
    items: impl Iterator<Item = T>,
) -> Result<(), DecodeError> {
    let items: Vec<T> = items.collect();
    if !items.windows(2).all(|w| w[0] < w[1]) {
        return Err(DecodeError::NotSorted(what));
    }
    Ok(())
}

fn check_commitment(c: &Commitment) -> Result<(), DecodeError> {
    check_count(
        "commitment data ids",
        c.data_ids.len(),
        limits::DATA_IDS_PER_TRAINER_MAX,
    )?;
    check_sorted("commitment data ids", c.data_ids.iter())
}

impl Message {
    pub fn round(&self) -> RoundNumber {
        match self {
            Message::Commit(m) => m.body.round,
            Message::CommitSet(m) => m.body.round,
            Message::Proposal(m) => m.body.round,
            Message::Vote(m) => m.body.round,
            Message::Join(m) | Message::Leave(m) => m.body.round,
        }
    }

    pub fn run_id(&self) -> RunId {
        match self {
            Message::Commit(m) => m.body.run_id,
            Message::CommitSet(m) => m.body.run_id,
            Message::Proposal(m) => m.body.run_id,
            Message::Vote(m) => m.body.run_id,
            Message::Join(m) | Message::Leave(m) => m.body.run_id,
        }
    }

    pub fn signer(&self) -> PeerId {
        match self {
            Message::Commit(m) => m.signer,
            Message::CommitSet(m) => m.signer,
            Message::Proposal(m) => m.signer,
            Message::Vote(m) => m.signer,
            Message::Join(m) | Message::Leave(m) => m.signer,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![WIRE_VERSION];
        out.extend(postcard::to_allocvec(self).expect("round message serializes"));
        debug_assert!(
            out.len() <= limits::MESSAGE_BYTES_MAX,
            "encoded message over MESSAGE_BYTES_MAX"
        );
        out
    }

    /// Decodes untrusted bytes. Never panics; checks size first, then structure and counts.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        if bytes.len() > limits::MESSAGE_BYTES_MAX {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if version != WIRE_VERSION {
            return Err(DecodeError::Version(version));
        }
        // postcard bounds every sequence by the remaining input, so the size check above bounds allocation.
        let (message, rest): (Message, _) =
            postcard::take_from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(DecodeError::Trailing(rest.len()));
        }
        message.check_limits()?;
        Ok(message)
    }

    fn check_limits(&self) -> Result<(), DecodeError> {
        match self {
            Message::Commit(m) => check_commitment(&m.body),
            Message::CommitSet(m) => {
                check_count(
                    "commit set",
                    m.body.commitments.len(),
                    limits::COMMITTEE_PEERS_MAX,
                )?;
                check_sorted(
                    "commit set signers",
                    m.body.commitments.iter().map(|c| c.signer),
                )?;
                m.body
                    .commitments
                    .iter()
                    .try_for_each(|c| check_commitment(&c.body))
            }
            Message::Proposal(m) => {
                let p = &m.body;
                check_count(
                    "proposal included",
                    p.included.len(),
                    limits::COMMITTEE_PEERS_MAX,
                )?;
                check_count(
                    "proposal excluded",
                    p.excluded.len(),
                    limits::COMMITTEE_PEERS_MAX,
                )?;
                check_count("proposal joins", p.joins.len(), limits::JOINS_PER_ROUND_MAX)?;
                check_count(
                    "proposal leaves",
                    p.leaves.len(),
                    limits::LEAVES_PER_ROUND_MAX,
                )?;
                check_sorted("proposal included", p.included.iter())?;
                check_sorted("proposal excluded", p.excluded.iter().map(|e| e.0))?;
                check_sorted("proposal joins", p.joins.iter())?;
                check_sorted("proposal leaves", p.leaves.iter())
            }
            Message::Vote(_) | Message::Join(_) | Message::Leave(_) => Ok(()),
        }
    }

    /// Content digest of the canonical encoding: how proposals and commit sets are referred to.
    pub fn digest(&self) -> Hash32 {
        Hash32::of(&self.encode())
    }
}

/// Bytes that a signature covers: a domain tag naming the body type, then the body's encoding.
fn signing_bytes<T: Serialize>(domain: &'static [u8], body: &T) -> Vec<u8> {
    let mut out = b"commonweight/round/v1/".to_vec();
    out.extend_from_slice(domain);
    out.push(0);
    out.extend(postcard::to_allocvec(body).expect("round body serializes"));
    out
}

/// A body type with its own signature domain, so a signature over one kind never verifies as another.
pub trait Body: Serialize {
    const DOMAIN: &'static [u8];
}
impl Body for Commitment {
    const DOMAIN: &'static [u8] = b"commitment";
}
impl Body for CommitSet {
    const DOMAIN: &'static [u8] = b"commit-set";
}
impl Body for Proposal {
    const DOMAIN: &'static [u8] = b"proposal";
}
impl Body for Vote {
    const DOMAIN: &'static [u8] = b"vote";
}
impl Body for Announce {
    const DOMAIN: &'static [u8] = b"announce";
}

pub fn peer_id_of(key: &SigningKey) -> PeerId {
    PeerId(key.verifying_key().to_bytes())
}

pub fn sign<T: Body>(key: &SigningKey, body: T) -> Signed<T> {
    let sig = key.sign(&signing_bytes(T::DOMAIN, &body)).to_bytes();
    let mut r = [0u8; 32];
    let mut s = [0u8; 32];
    r.copy_from_slice(&sig[..32]);
    s.copy_from_slice(&sig[32..]);
    Signed {
        body,
        signer: peer_id_of(key),
        signature: Signature { r, s },
    }
}

/// Join and Leave share a body type; their signatures are separated by this extra domain byte.
pub fn sign_announce(key: &SigningKey, body: Announce, leave: bool) -> Signed<Announce> {
    if leave {
        sign_leave(key, body)
    } else {
        sign(key, body)
    }
}

fn leave_bytes(body: &Announce) -> Vec<u8> {
    let mut bytes = signing_bytes(b"leave", body);
    bytes.push(1);
    bytes
}

fn sign_leave(key: &SigningKey, body: Announce) -> Signed<Announce> {
    let sig = key.sign(&leave_bytes(&body)).to_bytes();
    let mut r = [0u8; 32];
    let mut s = [0u8; 32];
    r.copy_from_slice(&sig[..32]);
    s.copy_from_slice(&sig[32..]);
    Signed {
        body,
        signer: peer_id_of(key),
        signature: Signature { r, s },
    }
}

fn verify_bytes(signer: PeerId, signature: &Signature, bytes: &[u8]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(&signer.0) else {
        return false;
    };
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&signature.r);
    sig[32..].copy_from_slice(&signature.s);
    key.verify(&bytes, &ed25519_dalek::Signature::from_bytes(&sig))
        .is_ok()
}

pub fn verify<T: Body>(signed: &Signed<T>) -> bool {
    verify_bytes(
        signed.signer,
        &signed.signature,
        &signing_bytes(T::DOMAIN, &signed.body),
    )
}

pub fn verify_leave(signed: &Signed<Announce>) -> bool {
    verify_bytes(signed.signer, &signed.signature, &leave_bytes(&signed.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i; 32])
    }

    fn vote() -> Vote {
        Vote {
            run_id: RunId(Hash32::of(b"run")),
            round: RoundNumber(3),
            rank: 0,
            proposal_digest: Hash32::of(b"p"),
            state_digest: Hash32::of(b"s"),
            base_digest: Hash32::of(b"b"),
        }
    }

    #[test]
    fn signed_message_round_trips_and_tampering_breaks_the_signature() {
        let signed = sign(&key(1), vote());
        assert!(verify(&signed));
        let message = Message::Vote(signed.clone());
        assert_eq!(Message::decode(&message.encode()).unwrap(), message);
        let mut tampered = signed;
        tampered.body.round = RoundNumber(4);
        assert!(!verify(&tampered));
    }

    #[test]
    fn join_signature_does_not_verify_as_leave() {
        let body = Announce {
            run_id: RunId(Hash32::of(b"run")),
            round: RoundNumber(1),
        };
        let join = sign_announce(&key(2), body.clone(), false);
        let leave = sign_announce(&key(2), body, true);
        assert!(verify(&join) && !verify_leave(&join));
        assert!(verify_leave(&leave) && !verify(&leave));
    }

    #[test]
    fn decoder_rejects_hostile_bytes_with_typed_errors() {
        assert_eq!(Message::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(Message::decode(&[7, 0]), Err(DecodeError::Version(7)));
        assert!(matches!(
            Message::decode(&[WIRE_VERSION, 200]),
            Err(DecodeError::Malformed(_))
        ));
        let big = vec![WIRE_VERSION; limits::MESSAGE_BYTES_MAX + 1];
        assert_eq!(Message::decode(&big), Err(DecodeError::TooLarge(big.len())));
        let mut bytes = Message::Vote(sign(&key(1), vote())).encode();
        bytes.push(0);
        assert_eq!(Message::decode(&bytes), Err(DecodeError::Trailing(1)));
        let commit = Commitment {
            run_id: RunId(Hash32::ZERO),
            round: RoundNumber(0),
            base_model_hash: Hash32::ZERO,
            data_ids: vec![3, 1],
            update_cid: Hash32::ZERO,
            update_bytes: 0,
            claimed_loss_bits: 0,
            codec_id: 0,
        };
        let bytes = Message::Commit(sign(&key(1), commit)).encode();
        assert_eq!(
            Message::decode(&bytes),
            Err(DecodeError::NotSorted("commitment data ids"))
        );
    }
}
