//! Blocks: the consensus payload that validators order, and the hash-chained record stored
//! once a block is final.

use serde::{Deserialize, Serialize};
use types::limits::ledger as limits;
use types::Hash32;

use crate::state::Outcome;
use crate::wire::{decode_exact, encode, SignedTx, WireError, WIRE_VERSION};

/// The payload simplex orders. Its digest (SHA-256 of [`Block::to_bytes`], the hash simplex's
/// certificates sign) names it; `parent` links it to the previous block's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub version: u8,
    /// The ledger (chain id) this block extends.
    pub chain: Hash32,
    /// Digest of the parent block; the genesis digest for the first block. (Heights are not
    /// in the block: validators can vote on a block without knowing its parent's height.)
    pub parent: [u8; 32],
    /// The consensus view that proposed it (0 under the local sequencer).
    pub view: u64,
    pub txs: Vec<SignedTx>,
}

impl Block {
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Block, WireError> {
        let block: Block = decode_exact("block", bytes, limits::BLOCK_BYTES_MAX)?;
        if block.version != WIRE_VERSION {
            return Err(WireError::Version {
                what: "block",
                got: block.version,
                expected: WIRE_VERSION,
            });
        }
        if block.txs.len() > limits::TXS_PER_BLOCK_MAX {
            return Err(WireError::TooMany {
                what: "block transactions",
                count: block.txs.len(),
                max: limits::TXS_PER_BLOCK_MAX,
            });
        }
        block.txs.iter().try_for_each(SignedTx::check_fields)?;
        Ok(block)
    }

    /// SHA-256 of the encoding: the digest consensus votes on.
    pub fn digest(&self) -> [u8; 32] {
        digest_of(&self.to_bytes())
    }
}

/// SHA-256, the digest simplex certificates sign (the same function as commonware's `Sha256`).
pub fn digest_of(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// The digest every chain starts from: SHA-256 of the chain id with a domain tag.
pub fn genesis_digest(chain: Hash32) -> [u8; 32] {
    let mut bytes = b"commonweight/ledger/genesis-block/v1".to_vec();
    bytes.extend_from_slice(&chain.0);
    digest_of(&bytes)
}

/// Why a block is final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Finality {
    /// A simplex finalization certificate over this block's digest (commonware codec bytes of
    /// `Finalization<ed25519::Scheme, Sha256Digest>`).
    Simplex { finalization: Vec<u8> },
    /// Finalized through a descendant: the block at `height` carries the certificate, and the
    /// parent digests link this block to it.
    Ancestor { certified_height: u64 },
    /// Single-validator ledger: the one validator's ed25519 signature over
    /// [`sequencer_message`].
    Sequencer {
        #[serde(with = "crate::wire::sig64")]
        signature: [u8; 64],
    },
}

/// The message the local sequencer signs for a block.
pub fn sequencer_message(chain: Hash32, height: u64, digest: &[u8; 32]) -> Vec<u8> {
    let mut bytes = b"commonweight/ledger/sequencer/v1".to_vec();
    bytes.extend_from_slice(&chain.0);
    bytes.extend_from_slice(&height.to_le_bytes());
    bytes.extend_from_slice(digest);
    bytes
}

/// What the store keeps per height: the block, what each transaction did, the state root
/// after it, the proof of finality, and the hash of the previous record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub version: u8,
    pub height: u64,
    /// BLAKE3 of the previous record's bytes; the chain id for height 1.
    pub prev_hash: Hash32,
    /// The exact block bytes that consensus ordered (their SHA-256 is the signed digest).
    pub block: Vec<u8>,
    pub outcomes: Vec<Outcome>,
    pub state_root: Hash32,
    pub finality: Finality,
}

impl Record {
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Record, WireError> {
        let record: Record = decode_exact("record", bytes, limits::RECORD_BYTES_MAX)?;
        if record.version != WIRE_VERSION {
            return Err(WireError::Version {
                what: "record",
                got: record.version,
                expected: WIRE_VERSION,
            });
        }
        if record.outcomes.len() > limits::TXS_PER_BLOCK_MAX {
            return Err(WireError::TooMany {
                what: "record outcomes",
                count: record.outcomes.len(),
                max: limits::TXS_PER_BLOCK_MAX,
            });
        }
        Ok(record)
    }

    pub fn hash(&self) -> Hash32 {
        Hash32::of(&self.to_bytes())
    }
}
