//! Replay of the stored chain: `verify_chain` (what `commonweight ledger verify` runs) and the
//! [`Replica`] that a validator or node keeps: the store plus the state it implies.

use std::path::Path;

use types::Hash32;

use crate::chain::{genesis_digest, sequencer_message, Block, Finality, Record};
use crate::state::{FraudProofChecker, Genesis, LedgerState, Outcome};
use crate::store::{Store, StoreError};
use crate::wire::{verify_signature, WireError, WIRE_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("record at height {height}: {source}")]
    Decode { height: u64, source: WireError },
    #[error("record stored under key {key} says height {height}")]
    KeyMismatch { key: u64, height: u64 },
    #[error("record at height {0} does not link to the previous record's hash")]
    BrokenLink(u64),
    #[error("block at height {0} is for another ledger")]
    WrongChain(u64),
    #[error("block at height {0} does not name the previous block's digest as its parent")]
    BrokenParent(u64),
    #[error("transaction outcomes at height {0} differ from the replay")]
    Outcomes(u64),
    #[error("state root at height {height}: stored {stored}, replay gives {replayed}")]
    StateRoot {
        height: u64,
        stored: Hash32,
        replayed: Hash32,
    },
    #[error("finality proof at height {height} is invalid: {reason}")]
    Finality { height: u64, reason: String },
    #[error("blocks from height {0} claim a later certificate that never comes")]
    UncertifiedTail(u64),
    #[error("the stored head {stored:?} does not match the last record {replayed:?}")]
    Head {
        stored: Option<(u64, Hash32)>,
        replayed: Option<(u64, Hash32)>,
    },
    #[error("balances do not equal minted minus slashed at height {0}")]
    Conservation(u64),
}

/// What a successful verification saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub blocks: u64,
    pub transactions: u64,
    pub certificates: u64,
    pub state_root: Hash32,
}

/// Replays one block on `state`, returning each transaction's outcome.
pub fn execute(
    state: &mut LedgerState,
    block: &Block,
    checker: &dyn FraudProofChecker,
) -> Vec<Outcome> {
    block
        .txs
        .iter()
        .map(|tx| state.apply(tx, checker))
        .collect()
}

/// Replays from genesis, checking every link, every transaction signature (inside `apply`),
/// every outcome, every state root and every finality proof. `full == false` skips the
/// finality proofs (used when a replica reopens its own store).
pub fn replay_store(
    store: &Store,
    checker: &dyn FraudProofChecker,
    full: bool,
) -> Result<(LedgerState, [u8; 32], VerifyReport), VerifyError> {
    let genesis = store.genesis().clone();
    let chain = genesis.chain_id();
    let mut state = LedgerState::new(&genesis);
    let mut prev_hash = chain;
    let mut prev_digest = genesis_digest(chain);
    let mut report = VerifyReport {
        blocks: 0,
        transactions: 0,
        certificates: 0,
        state_root: state.root(),
    };
    // Heights waiting for a descendant's certificate.
    let mut uncertified_from: Option<u64> = None;
    let mut last: Option<(u64, Hash32)> = None;
    store.for_each_record(|key, bytes| {
        let height = report.blocks + 1;
        let record =
            Record::from_bytes(bytes).map_err(|source| VerifyError::Decode { height, source })?;
        if record.height != key || key != height {
            return Err(VerifyError::KeyMismatch {
                key,
                height: record.height,
            });
        }
        if record.prev_hash != prev_hash {
            return Err(VerifyError::BrokenLink(height));
        }
        let block = Block::from_bytes(&record.block)
            .map_err(|source| VerifyError::Decode { height, source })?;
        if block.chain != chain {
            return Err(VerifyError::WrongChain(height));
        }
        if block.parent != prev_digest {
            return Err(VerifyError::BrokenParent(height));
        }
        let outcomes = execute(&mut state, &block, checker);
        if outcomes != record.outcomes {
            return Err(VerifyError::Outcomes(height));
        }
        let root = state.root();
        if root != record.state_root {
            return Err(VerifyError::StateRoot {
                height,
                stored: record.state_root,
                replayed: root,
            });
        }
        if full && !state.conservation_holds() {
            return Err(VerifyError::Conservation(height));
        }
        let digest = block.digest();
        match &record.finality {
            Finality::Ancestor { certified_height } => {
                if *certified_height <= height {
                    return Err(VerifyError::Finality {
                        height,
                        reason: "ancestor proof points backwards".into(),
                    });
                }
                uncertified_from.get_or_insert(height);
            }
            Finality::Simplex { finalization } => {
                if full {
                    check_simplex(&genesis, &digest, finalization)
                        .map_err(|reason| VerifyError::Finality { height, reason })?;
                    report.certificates += 1;
                }
                uncertified_from = None;
            }
            Finality::Sequencer { signature } => {
                if full {
                    check_sequencer(&genesis, height, &digest, signature)
                        .map_err(|reason| VerifyError::Finality { height, reason })?;
                    report.certificates += 1;
                }
                uncertified_from = None;
            }
        }
        prev_hash = Hash32::of(bytes);
        prev_digest = digest;
        report.blocks = height;
        report.transactions += block.txs.len() as u64;
        last = Some((height, prev_hash));
        Ok(())
    })?;
    if let Some(height) = uncertified_from {
        return Err(VerifyError::UncertifiedTail(height));
    }
    let stored = store.head()?;
    if stored != last {
        return Err(VerifyError::Head {
            stored,
            replayed: last,
        });
    }
    report.state_root = state.root();
    Ok((state, prev_digest, report))
}

/// `commonweight ledger verify`: the full check from genesis.
pub fn verify_chain(
    store: &Store,
    checker: &dyn FraudProofChecker,
) -> Result<VerifyReport, VerifyError> {
    replay_store(store, checker, true).map(|(_, _, report)| report)
}

#[cfg(feature = "simplex")]
fn check_simplex(genesis: &Genesis, digest: &[u8; 32], finalization: &[u8]) -> Result<(), String> {
    crate::consensus::check_finalization(genesis, digest, finalization)
}

#[cfg(not(feature = "simplex"))]
fn check_simplex(_: &Genesis, _: &[u8; 32], _: &[u8]) -> Result<(), String> {
    Err("this build cannot check simplex certificates; rebuild with `--features simplex`".into())
}

fn check_sequencer(
    genesis: &Genesis,
    height: u64,
    digest: &[u8; 32],
    signature: &[u8; 64],
) -> Result<(), String> {
    let [only] = genesis.validators.as_slice() else {
        return Err(format!(
            "sequencer finality needs exactly one validator, genesis has {}",
            genesis.validators.len()
        ));
    };
    let message = sequencer_message(genesis.chain_id(), height, digest);
    if !verify_signature(only, &message, signature) {
        return Err("sequencer signature does not verify".into());
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored chain does not replay: {0}")]
    Replay(#[from] VerifyError),
    #[error("finalized block does not decode: {0}")]
    Block(#[from] WireError),
    #[error("finalized block at height {height} does not extend the tip")]
    NotExtending { height: u64 },
}

/// A node's copy of the ledger: the durable store and the state it implies.
pub struct Replica {
    store: Store,
    state: LedgerState,
    tip_digest: [u8; 32],
    checker: Box<dyn FraudProofChecker + Send>,
}

impl Replica {
    /// Opens (or creates) the ledger in `dir` and replays it to rebuild the state.
    pub fn open(
        dir: &Path,
        genesis: &Genesis,
        checker: Box<dyn FraudProofChecker + Send>,
    ) -> Result<Replica, ReplicaError> {
        let store = Store::create(dir, genesis)?;
        let (state, tip_digest, _) = replay_store(&store, checker.as_ref(), false)?;
        Ok(Replica {
            store,
            state,
            tip_digest,
            checker,
        })
    }

    pub fn state(&self) -> &LedgerState {
        &self.state
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn genesis(&self) -> &Genesis {
        self.store.genesis()
    }

    pub fn checker(&self) -> &dyn FraudProofChecker {
        self.checker.as_ref()
    }

    pub fn height(&self) -> u64 {
        self.state_height()
    }

    fn state_height(&self) -> u64 {
        self.store.height().unwrap_or(0)
    }

    /// Digest of the last finalized block (the genesis digest when empty).
    pub fn tip_digest(&self) -> [u8; 32] {
        self.tip_digest
    }

    /// Executes finalized blocks (oldest first) and stores them durably in one transaction.
    pub fn commit(&mut self, blocks: &[(Vec<u8>, Finality)]) -> Result<(), ReplicaError> {
        let mut state = self.state.clone();
        let mut digest = self.tip_digest;
        let (mut height, mut prev_hash) =
            self.store.head()?.unwrap_or((0, self.genesis().chain_id()));
        let mut records = Vec::with_capacity(blocks.len());
        for (bytes, finality) in blocks {
            let block = Block::from_bytes(bytes)?;
            if block.parent != digest || block.chain != state.chain {
                return Err(ReplicaError::NotExtending { height: height + 1 });
            }
            let outcomes = execute(&mut state, &block, self.checker.as_ref());
            let record = Record {
                version: WIRE_VERSION,
                height: height + 1,
                prev_hash,
                block: bytes.clone(),
                outcomes,
                state_root: state.root(),
                finality: finality.clone(),
            };
            prev_hash = record.hash();
            height += 1;
            digest = block.digest();
            records.push(record);
        }
        self.store.append(&records)?;
        self.state = state;
        self.tip_digest = digest;
        Ok(())
    }

    /// Decoded records for `history`, oldest first.
    pub fn records(&self) -> Result<Vec<Record>, VerifyError> {
        let mut out = Vec::new();
        self.store.for_each_record(|height, bytes| {
            out.push(
                Record::from_bytes(bytes)
                    .map_err(|source| VerifyError::Decode { height, source })?,
            );
            Ok(())
        })?;
        Ok(out)
    }
}
