//! Signed, self-contained ownership statements for a checkpoint (format: docs/ledger-export.md).
//!
//! The statement is JSON. Its signatures cover a fixed binary message that a smart contract
//! can rebuild from the JSON fields alone (see [`statement_message`]); any number of parties
//! (typically the run's validators) may sign the same statement.

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use types::limits::ledger as limits;
use types::{Hash32, PeerId};

use crate::state::LedgerState;
use crate::wire::{peer_of, verify_signature};

pub const FORMAT: &str = "commonweight-ledger-ownership/v1";
const DOMAIN: &[u8] = b"commonweight/ledger/ownership/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Hex ed25519 public key.
    pub peer: String,
    pub shares: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementSignature {
    /// Hex ed25519 public key of the signer.
    pub signer: String,
    /// Hex 64-byte ed25519 signature over the statement message.
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnershipStatement {
    pub format: String,
    /// Hex chain id (BLAKE3 of the ledger genesis).
    pub chain: String,
    /// Hex run id.
    pub run: String,
    /// Hex checkpoint CID.
    pub checkpoint: String,
    pub round: u64,
    /// Ledger height and state root when the statement was made.
    pub ledger_height: u64,
    pub state_root: String,
    pub total_shares: u64,
    /// Sorted by peer, ascending bytes.
    pub owners: Vec<Owner>,
    pub signatures: Vec<StatementSignature>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("checkpoint {0} is not registered in this ledger")]
    UnknownCheckpoint(Hash32),
    #[error("statement format {0:?} is not {FORMAT:?}")]
    Format(String),
    #[error("field {0} is not valid hex of the right length")]
    Hex(&'static str),
    #[error("owners are not sorted and unique")]
    Order,
    #[error("owner shares do not add up to total_shares")]
    Total,
    #[error("too many owners: {0}")]
    TooMany(usize),
    #[error("statement has no signatures")]
    Unsigned,
    #[error("signature {0} does not verify")]
    BadSignature(usize),
    #[error("statement is not valid JSON: {0}")]
    Json(String),
}

/// Builds the unsigned statement for checkpoint `cid` from the state.
pub fn statement(
    state: &LedgerState,
    height: u64,
    cid: Hash32,
) -> Result<OwnershipStatement, ExportError> {
    let checkpoint = state
        .checkpoints
        .get(&cid)
        .ok_or(ExportError::UnknownCheckpoint(cid))?;
    Ok(OwnershipStatement {
        format: FORMAT.to_owned(),
        chain: state.chain.to_hex(),
        run: checkpoint.run.0.to_hex(),
        checkpoint: cid.to_hex(),
        round: checkpoint.round.0,
        ledger_height: height,
        state_root: state.root().to_hex(),
        total_shares: checkpoint.total,
        owners: checkpoint
            .owners
            .iter()
            .map(|(p, s)| Owner {
                peer: p.to_string(),
                shares: *s,
            })
            .collect(),
        signatures: Vec::new(),
    })
}

fn hex32(what: &'static str, s: &str) -> Result<[u8; 32], ExportError> {
    Hash32::from_hex(s)
        .map(|h| h.0)
        .map_err(|_| ExportError::Hex(what))
}

fn hex64(what: &'static str, s: &str) -> Result<[u8; 64], ExportError> {
    if s.len() != 128 {
        return Err(ExportError::Hex(what));
    }
    let mut out = [0u8; 64];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| ExportError::Hex(what))?;
    }
    Ok(out)
}

/// The exact bytes every signature covers:
/// `DOMAIN ‖ chain ‖ run ‖ checkpoint ‖ round:u64le ‖ ledger_height:u64le ‖ state_root ‖
/// total_shares:u64le ‖ owner_count:u32le ‖ (peer ‖ shares:u64le)*`.
pub fn statement_message(s: &OwnershipStatement) -> Result<Vec<u8>, ExportError> {
    if s.format != FORMAT {
        return Err(ExportError::Format(s.format.clone()));
    }
    if s.owners.len() > limits::EXPORT_ROWS_MAX {
        return Err(ExportError::TooMany(s.owners.len()));
    }
    let mut m = DOMAIN.to_vec();
    m.extend_from_slice(&hex32("chain", &s.chain)?);
    m.extend_from_slice(&hex32("run", &s.run)?);
    m.extend_from_slice(&hex32("checkpoint", &s.checkpoint)?);
    m.extend_from_slice(&s.round.to_le_bytes());
    m.extend_from_slice(&s.ledger_height.to_le_bytes());
    m.extend_from_slice(&hex32("state_root", &s.state_root)?);
    m.extend_from_slice(&s.total_shares.to_le_bytes());
    m.extend_from_slice(&(s.owners.len() as u32).to_le_bytes());
    let mut previous: Option<[u8; 32]> = None;
    let mut sum: u128 = 0;
    for owner in &s.owners {
        let peer = hex32("owners.peer", &owner.peer)?;
        if previous.is_some_and(|p| p >= peer) {
            return Err(ExportError::Order);
        }
        previous = Some(peer);
        sum += owner.shares as u128;
        m.extend_from_slice(&peer);
        m.extend_from_slice(&owner.shares.to_le_bytes());
    }
    if sum != s.total_shares as u128 {
        return Err(ExportError::Total);
    }
    Ok(m)
}

/// Adds `key`'s signature to the statement.
pub fn sign(s: &mut OwnershipStatement, key: &SigningKey) -> Result<(), ExportError> {
    let message = statement_message(s)?;
    let signature = key.sign(&message).to_bytes();
    s.signatures.push(StatementSignature {
        signer: peer_of(key).to_string(),
        signature: signature.iter().map(|b| format!("{b:02x}")).collect(),
    });
    Ok(())
}

/// Checks a statement: its format, field encodings, owner order and sum, and every signature.
/// Returns the signers; the caller decides whose signatures it trusts.
pub fn verify_statement(s: &OwnershipStatement) -> Result<Vec<PeerId>, ExportError> {
    let message = statement_message(s)?;
    if s.signatures.is_empty() {
        return Err(ExportError::Unsigned);
    }
    let mut signers = Vec::with_capacity(s.signatures.len());
    for (i, sig) in s.signatures.iter().enumerate() {
        let signer = PeerId(hex32("signatures.signer", &sig.signer)?);
        let signature = hex64("signatures.signature", &sig.signature)?;
        if !verify_signature(&signer, &message, &signature) {
            return Err(ExportError::BadSignature(i));
        }
        signers.push(signer);
    }
    Ok(signers)
}

pub fn from_json(text: &str) -> Result<OwnershipStatement, ExportError> {
    serde_json::from_str(text).map_err(|e| ExportError::Json(e.to_string()))
}
