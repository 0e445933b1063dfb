//! The local sequencer: orders blocks when the genesis names exactly one validator, where
//! simplex has nothing to agree on. Each block carries that validator's ed25519 signature
//! ([`crate::chain::sequencer_message`]) in place of a simplex certificate.

use ed25519_dalek::{Signer, SigningKey};

use crate::chain::{sequencer_message, Block, Finality};
use crate::replay::{Replica, ReplicaError};
use crate::wire::{peer_of, SignedTx, WIRE_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum SequencerError {
    #[error("the sequencer needs a genesis with exactly one validator, this one has {0}")]
    NotSingleValidator(usize),
    #[error("the key given is not the ledger's validator")]
    WrongKey,
    #[error("too many transactions for one block: {0}")]
    TooManyTxs(usize),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
}

pub struct Sequencer<'a> {
    replica: &'a mut Replica,
    key: SigningKey,
}

impl<'a> Sequencer<'a> {
    pub fn new(replica: &'a mut Replica, key: SigningKey) -> Result<Sequencer<'a>, SequencerError> {
        let validators = &replica.genesis().validators;
        if validators.len() != 1 {
            return Err(SequencerError::NotSingleValidator(validators.len()));
        }
        if validators[0] != peer_of(&key) {
            return Err(SequencerError::WrongKey);
        }
        Ok(Sequencer { replica, key })
    }

    /// Orders `txs` as the next block, executes it and stores it durably. Returns its height.
    pub fn sequence(&mut self, txs: Vec<SignedTx>) -> Result<u64, SequencerError> {
        if txs.len() > types::limits::ledger::TXS_PER_BLOCK_MAX {
            return Err(SequencerError::TooManyTxs(txs.len()));
        }
        let chain = self.replica.genesis().chain_id();
        let block = Block {
            version: WIRE_VERSION,
            chain,
            parent: self.replica.tip_digest(),
            view: 0,
            txs,
        };
        let height = self.replica.height() + 1;
        let signature = self
            .key
            .sign(&sequencer_message(chain, height, &block.digest()))
            .to_bytes();
        self.replica
            .commit(&[(block.to_bytes(), Finality::Sequencer { signature })])?;
        Ok(height)
    }
}
