//! The ledger state machine: accounts, minting, slashing, transfers and checkpoints.
//!
//! Sans-IO and deterministic: [`LedgerState::apply`] is a pure function of the state, the
//! transaction and the fraud-proof checker. Invalid transactions leave the state untouched and
//! come back as a typed [`Rejection`].
//!
//! # Minting formula
//!
//! A (run, round, peer) triple is minted at most once, when `verifier_quorum` distinct genesis
//! verifiers have recorded an *accepted* verdict for it and none has recorded a rejection. Then
//!
//! ```text
//! shares = floor(tokens × score_ppm / 1_000_000)
//! ```
//!
//! where `tokens` and `score_ppm` are the minimum `tokens_trained` and `score_ppm` over the
//! quorum's accepted verdicts (the most conservative claim any quorum member signed). So one
//! share is one verified token at full score. A rejection recorded before the quorum blocks
//! the mint for that triple forever.
//!
//! # Slashing
//!
//! A `Slash` carrying a fraud proof that the [`FraudProofChecker`] accepts removes from the
//! accused `min(balance, shares minted to it for that run and round)` and blocks any later mint
//! for that triple. Each triple is slashed at most once. Invariant kept by every transaction:
//! the sum of all balances equals `total_minted − total_slashed`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use types::limits::ledger as limits;
use types::{Hash32, PeerId, RoundNumber, RunId};

use crate::wire::{FraudProof, SignedTx, TxBody, Verdict};

/// Who may do what in one ledger. Fixed at genesis; its hash is the chain id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    pub version: u8,
    /// The run whose work this ledger credits.
    pub run: RunId,
    /// Consensus validators (ed25519 public keys), in a fixed order.
    pub validators: Vec<PeerId>,
    /// Peers whose verdicts count.
    pub verifiers: Vec<PeerId>,
    /// Distinct accepting verifiers needed before a mint.
    pub verifier_quorum: u32,
    /// Consensus namespace (domain separation of simplex signatures).
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    #[error("genesis has {0} validators; it needs 1..={max}", max = limits::VALIDATORS_MAX)]
    Validators(usize),
    #[error("genesis has {0} verifiers; the limit is {max}", max = limits::VERIFIERS_MAX)]
    Verifiers(usize),
    #[error("genesis verifier quorum {quorum} is not in 1..={verifiers}")]
    Quorum { quorum: u32, verifiers: usize },
    #[error("genesis lists a validator or verifier twice")]
    Duplicate,
    #[error("genesis version {0} is not supported")]
    Version(u8),
    #[error(transparent)]
    Wire(#[from] crate::wire::WireError),
}

impl Genesis {
    pub fn check(&self) -> Result<(), GenesisError> {
        if self.version != crate::wire::WIRE_VERSION {
            return Err(GenesisError::Version(self.version));
        }
        if self.validators.is_empty() || self.validators.len() > limits::VALIDATORS_MAX {
            return Err(GenesisError::Validators(self.validators.len()));
        }
        if self.verifiers.len() > limits::VERIFIERS_MAX {
            return Err(GenesisError::Verifiers(self.verifiers.len()));
        }
        if self.verifier_quorum == 0 || self.verifier_quorum as usize > self.verifiers.len() {
            return Err(GenesisError::Quorum {
                quorum: self.verifier_quorum,
                verifiers: self.verifiers.len(),
            });
        }
        let validators: BTreeSet<_> = self.validators.iter().collect();
        let verifiers: BTreeSet<_> = self.verifiers.iter().collect();
        if validators.len() != self.validators.len() || verifiers.len() != self.verifiers.len() {
            return Err(GenesisError::Duplicate);
        }
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        crate::wire::encode(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Genesis, GenesisError> {
        let genesis: Genesis =
            crate::wire::decode_exact("genesis", bytes, limits::GENESIS_BYTES_MAX)?;
        genesis.check()?;
        Ok(genesis)
    }

    /// The chain id: BLAKE3 of the genesis encoding. Every transaction names it.
    pub fn chain_id(&self) -> Hash32 {
        Hash32::of(&self.to_bytes())
    }
}

/// Decides whether an opaque fraud proof is valid. The `verify` crate plugs its checker in here.
///
/// Must be deterministic: every validator and every `ledger verify` must reach the same answer
/// for the same proof, or replicas diverge.
pub trait FraudProofChecker {
    /// `Ok(())` when `proof` proves that `proof.accused` cheated in `proof.round` of `proof.run`.
    fn check(&self, proof: &FraudProof) -> Result<(), String>;
}

/// The checker used when none is plugged in: every proof is refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFraudProofs;

impl FraudProofChecker for NoFraudProofs {
    fn check(&self, _proof: &FraudProof) -> Result<(), String> {
        Err("this ledger has no fraud-proof checker".to_owned())
    }
}

/// Why a transaction was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("malformed transaction: {0}")]
    Malformed(String),
    #[error("transaction is for another ledger")]
    WrongChain,
    #[error("transaction signature does not verify")]
    BadSignature,
    #[error("nonce {got}, expected {expected}")]
    BadNonce { expected: u64, got: u64 },
    #[error("transaction records no verdicts")]
    NoVerdicts,
    #[error("verdict {index} is for run {got:?}, this ledger is for {expected:?}")]
    WrongRun {
        index: usize,
        expected: RunId,
        got: RunId,
    },
    #[error("verdict {index} is signed by a peer that is not a genesis verifier")]
    UnknownVerifier { index: usize },
    #[error("verdict {index} signature does not verify")]
    BadVerdictSignature { index: usize },
    #[error("verdict {index} was already recorded (same run, round, peer, verifier)")]
    DuplicateVerdict { index: usize },
    #[error("fraud proof is for run {got:?}, this ledger is for {expected:?}")]
    ProofWrongRun { expected: RunId, got: RunId },
    #[error("fraud proof refused: {0}")]
    ProofRefused(String),
    #[error("this peer was already slashed for that round")]
    AlreadySlashed,
    #[error("transfer of zero shares")]
    ZeroAmount,
    #[error("transfer to self")]
    SelfTransfer,
    #[error("balance {balance} is below the amount {amount}")]
    InsufficientBalance { balance: u64, amount: u64 },
    #[error("the ledger holds its maximum number of accounts")]
    TooManyAccounts,
    #[error("only a genesis verifier may register a checkpoint")]
    NotAVerifier,
    #[error("checkpoint {0} is already registered")]
    DuplicateCheckpoint(Hash32),
    #[error("checkpoint round {got:?} is before the last registered round {last:?}")]
    CheckpointRoundRegressed { last: RoundNumber, got: RoundNumber },
    #[error("the ledger holds its maximum number of checkpoints")]
    TooManyCheckpoints,
    #[error("arithmetic overflow")]
    Overflow,
}

/// What an applied transaction did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// Verdicts recorded; `mints` lists the shares minted as a result.
    Recorded {
        mints: Vec<(PeerId, u64)>,
    },
    Slashed {
        peer: PeerId,
        amount: u64,
    },
    Transferred {
        from: PeerId,
        to: PeerId,
        amount: u64,
    },
    CheckpointRegistered {
        cid: Hash32,
    },
}

/// The result of one transaction in a block; stored and re-derived by `ledger verify`.
pub type Outcome = Result<Effect, Rejection>;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub balance: u64,
    pub nonce: u64,
    pub minted: u64,
    pub slashed: u64,
    pub received: u64,
    pub sent: u64,
}

/// Progress of one (round, peer) work item towards a mint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkItem {
    /// Accepted verdicts so far: verifier → (tokens, score_ppm).
    pub accepts: BTreeMap<PeerId, (u64, u32)>,
    /// Verifiers that rejected the work.
    pub rejects: BTreeSet<PeerId>,
    pub rejected: bool,
    pub minted: u64,
    pub slashed: bool,
}

/// An ownership table frozen when a checkpoint was registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub run: RunId,
    pub round: RoundNumber,
    pub registered_by: PeerId,
    /// Every account with a nonzero balance, by peer id.
    pub owners: Vec<(PeerId, u64)>,
    pub total: u64,
}

/// The whole ledger state. Its canonical encoding (postcard; every map is a BTreeMap, so the
/// order is fixed) is hashed into the state root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerState {
    pub chain: Hash32,
    pub run: RunId,
    verifiers: BTreeSet<PeerId>,
    verifier_quorum: u32,
    pub accounts: BTreeMap<PeerId, Account>,
    /// Work items keyed by (round, peer); the run is fixed by genesis.
    pub work: BTreeMap<(RoundNumber, PeerId), WorkItem>,
    pub checkpoints: BTreeMap<Hash32, Checkpoint>,
    pub last_checkpoint_round: Option<RoundNumber>,
    pub total_minted: u64,
    pub total_slashed: u64,
}

impl LedgerState {
    pub fn new(genesis: &Genesis) -> LedgerState {
        LedgerState {
            chain: genesis.chain_id(),
            run: genesis.run,
            verifiers: genesis.verifiers.iter().copied().collect(),
            verifier_quorum: genesis.verifier_quorum,
            accounts: BTreeMap::new(),
            work: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            last_checkpoint_round: None,
            total_minted: 0,
            total_slashed: 0,
        }
    }

    /// BLAKE3 over the canonical encoding of the whole state.
    pub fn root(&self) -> Hash32 {
        Hash32::of(&crate::wire::encode(self))
    }

    pub fn balance(&self, peer: &PeerId) -> u64 {
        self.accounts.get(peer).map_or(0, |a| a.balance)
    }

    pub fn nonce(&self, peer: &PeerId) -> u64 {
        self.accounts.get(peer).map_or(0, |a| a.nonce)
    }

    /// Checks that the sum of balances is total minted minus total slashed, and that each
    /// account's balance matches its own counters. Used by tests and by `ledger verify`.
    pub fn conservation_holds(&self) -> bool {
        let mut sum: u128 = 0;
        for account in self.accounts.values() {
            let expected = account.minted as i128 + account.received as i128
                - account.sent as i128
                - account.slashed as i128;
            if expected != account.balance as i128 {
                return false;
            }
            sum += account.balance as u128;
        }
        sum == self.total_minted as u128 - self.total_slashed as u128
    }

    /// Applies one transaction. On `Err` the state is unchanged.
    pub fn apply(&mut self, tx: &SignedTx, checker: &dyn FraudProofChecker) -> Outcome {
        tx.check_fields()
            .map_err(|e| Rejection::Malformed(e.to_string()))?;
        if tx.chain != self.chain {
            return Err(Rejection::WrongChain);
        }
        if !tx.signature_is_valid() {
            return Err(Rejection::BadSignature);
        }
        let expected = self.nonce(&tx.signer);
        if tx.nonce != expected {
            return Err(Rejection::BadNonce {
                expected,
                got: tx.nonce,
            });
        }
        // Every check runs before any mutation, so a rejection leaves no trace and no copy of
        // the state is needed.
        if !self.accounts.contains_key(&tx.signer) && self.accounts.len() >= limits::ACCOUNTS_MAX {
            return Err(Rejection::TooManyAccounts);
        }
        let effect = match &tx.body {
            TxBody::RecordVerdicts { verdicts } => self.record_verdicts(tx.signer, verdicts)?,
            TxBody::Slash { proof } => self.slash(proof, checker)?,
            TxBody::Transfer { to, amount } => self.transfer(tx.signer, *to, *amount)?,
            TxBody::RegisterCheckpoint { run, round, cid } => {
                self.register_checkpoint(tx.signer, *run, *round, *cid)?
            }
        };
        self.accounts.entry(tx.signer).or_default().nonce += 1;
        Ok(effect)
    }

    fn record_verdicts(
        &mut self,
        signer: PeerId,
        verdicts: &[Verdict],
    ) -> Result<Effect, Rejection> {
        if verdicts.is_empty() {
            return Err(Rejection::NoVerdicts);
        }
        let mut seen = BTreeSet::new();
        let mut new_accounts = BTreeSet::new();
        for (index, verdict) in verdicts.iter().enumerate() {
            if verdict.run != self.run {
                return Err(Rejection::WrongRun {
                    index,
                    expected: self.run,
                    got: verdict.run,
                });
            }
            if !self.verifiers.contains(&verdict.verifier) {
                return Err(Rejection::UnknownVerifier { index });
            }
            if !verdict.signature_is_valid() {
                return Err(Rejection::BadVerdictSignature { index });
            }
            let key = (verdict.round, verdict.peer);
            let recorded = self.work.get(&key).is_some_and(|w| {
                w.accepts.contains_key(&verdict.verifier) || w.rejects.contains(&verdict.verifier)
            });
            if recorded || !seen.insert((key, verdict.verifier)) {
                return Err(Rejection::DuplicateVerdict { index });
            }
            if verdict.peer != signer && !self.accounts.contains_key(&verdict.peer) {
                new_accounts.insert(verdict.peer);
            }
        }
        if self.accounts.len() + new_accounts.len() + 1 > limits::ACCOUNTS_MAX {
            return Err(Rejection::TooManyAccounts);
        }
        // Each mint is at most TOKENS_PER_VERDICT_MAX shares; with this headroom no balance or
        // total below can overflow (balances never exceed total_minted).
        let headroom = limits::TOKENS_PER_VERDICT_MAX * verdicts.len() as u64;
        if self.total_minted > u64::MAX - headroom {
            return Err(Rejection::Overflow);
        }
        let mints = verdicts.iter().filter_map(|v| self.record_one(v)).collect();
        Ok(Effect::Recorded { mints })
    }

    /// Records one pre-checked verdict; returns the mint it triggers, if any.
    fn record_one(&mut self, verdict: &Verdict) -> Option<(PeerId, u64)> {
        let quorum = self.verifier_quorum as usize;
        let item = self.work.entry((verdict.round, verdict.peer)).or_default();
        if !verdict.accepted {
            item.rejects.insert(verdict.verifier);
            item.rejected = true;
            return None;
        }
        item.accepts.insert(
            verdict.verifier,
            (verdict.tokens_trained, verdict.score_ppm),
        );
        let ready =
            item.accepts.len() == quorum && !item.rejected && !item.slashed && item.minted == 0;
        if !ready {
            return None;
        }
        let shares = shares_for(item.accepts.values().copied());
        item.minted = shares;
        if shares == 0 {
            return None;
        }
        self.total_minted += shares;
        let account = self.accounts.entry(verdict.peer).or_default();
        account.balance += shares;
        account.minted += shares;
        Some((verdict.peer, shares))
    }

    fn slash(
        &mut self,
        proof: &FraudProof,
        checker: &dyn FraudProofChecker,
    ) -> Result<Effect, Rejection> {
        if proof.run != self.run {
            return Err(Rejection::ProofWrongRun {
                expected: self.run,
                got: proof.run,
            });
        }
        let key = (proof.round, proof.accused);
        if self.work.get(&key).is_some_and(|w| w.slashed) {
            return Err(Rejection::AlreadySlashed);
        }
        checker.check(proof).map_err(Rejection::ProofRefused)?;
        let item = self.work.entry(key).or_default();
        item.slashed = true;
        let minted = item.minted;
        let Some(account) = self.accounts.get_mut(&proof.accused) else {
            return Ok(Effect::Slashed {
                peer: proof.accused,
                amount: 0,
            });
        };
        let amount = minted.min(account.balance);
        account.balance -= amount;
        account.slashed += amount;
        self.total_slashed += amount;
        Ok(Effect::Slashed {
            peer: proof.accused,
            amount,
        })
    }

    fn transfer(&mut self, from: PeerId, to: PeerId, amount: u64) -> Result<Effect, Rejection> {
        if amount == 0 {
            return Err(Rejection::ZeroAmount);
        }
        if from == to {
            return Err(Rejection::SelfTransfer);
        }
        let balance = self.balance(&from);
        if balance < amount {
            return Err(Rejection::InsufficientBalance { balance, amount });
        }
        if !self.accounts.contains_key(&to) && self.accounts.len() >= limits::ACCOUNTS_MAX {
            return Err(Rejection::TooManyAccounts);
        }
        // No overflow: every balance is at most total_minted.
        let receiver = self.accounts.entry(to).or_default();
        receiver.balance += amount;
        receiver.received += amount;
        let sender = self
            .accounts
            .get_mut(&from)
            .expect("a positive balance means the account exists");
        sender.balance -= amount;
        sender.sent += amount;
        Ok(Effect::Transferred { from, to, amount })
    }

    fn register_checkpoint(
        &mut self,
        signer: PeerId,
        run: RunId,
        round: RoundNumber,
        cid: Hash32,
    ) -> Result<Effect, Rejection> {
        if !self.verifiers.contains(&signer) {
            return Err(Rejection::NotAVerifier);
        }
        if run != self.run {
            return Err(Rejection::ProofWrongRun {
                expected: self.run,
                got: run,
            });
        }
        if self.checkpoints.contains_key(&cid) {
            return Err(Rejection::DuplicateCheckpoint(cid));
        }
        if let Some(last) = self.last_checkpoint_round {
            if round < last {
                return Err(Rejection::CheckpointRoundRegressed { last, got: round });
            }
        }
        if self.checkpoints.len() >= limits::CHECKPOINTS_MAX {
            return Err(Rejection::TooManyCheckpoints);
        }
        let owners: Vec<(PeerId, u64)> = self
            .accounts
            .iter()
            .filter(|(_, a)| a.balance > 0)
            .map(|(p, a)| (*p, a.balance))
            .collect();
        let total = owners.iter().map(|(_, b)| b).sum();
        self.checkpoints.insert(
            cid,
            Checkpoint {
                run,
                round,
                registered_by: signer,
                owners,
                total,
            },
        );
        self.last_checkpoint_round = Some(round);
        Ok(Effect::CheckpointRegistered { cid })
    }
}

/// The minting formula: `floor(min tokens × min score_ppm / 1_000_000)` over the quorum.
pub fn shares_for(accepts: impl Iterator<Item = (u64, u32)>) -> u64 {
    let (mut tokens, mut score) = (u64::MAX, u32::MAX);
    let mut any = false;
    for (t, s) in accepts {
        tokens = tokens.min(t);
        score = score.min(s);
        any = true;
    }
    if !any {
        return 0;
    }
    let shares = tokens as u128 * score as u128 / limits::SCORE_PPM_MAX as u128;
    // tokens ≤ 2^40 and score ≤ 1e6 bound shares by 2^40: it fits in u64.
    shares as u64
}
