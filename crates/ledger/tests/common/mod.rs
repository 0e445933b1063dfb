//! Shared fixtures for the ledger tests: keys, a genesis, signed transactions.
#![allow(dead_code)]

use ed25519_dalek::SigningKey;
use ledger::{FraudProof, FraudProofChecker, Genesis, SignedTx, TxBody, Verdict};
use types::{Hash32, PeerId, RoundNumber, RunId};

pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn peer(seed: u8) -> PeerId {
    ledger::peer_of(&key(seed))
}

pub const RUN: RunId = RunId(Hash32([7; 32]));

/// Verifiers are seeds 100.., validators 200.., trainers 1..
pub fn genesis(validators: u8, verifiers: u8, quorum: u32) -> Genesis {
    Genesis {
        version: ledger::WIRE_VERSION,
        run: RUN,
        validators: (0..validators).map(|i| peer(200 + i)).collect(),
        verifiers: (0..verifiers).map(|i| peer(100 + i)).collect(),
        verifier_quorum: quorum,
        namespace: "commonweight-ledger-test".into(),
    }
}

pub fn verdict(
    verifier: u8,
    round: u64,
    trainer: u8,
    accepted: bool,
    score_ppm: u32,
    tokens: u64,
) -> Verdict {
    let reason = if accepted { "" } else { "norm outlier" };
    Verdict::sign(
        &key(verifier),
        RUN,
        RoundNumber(round),
        peer(trainer),
        accepted,
        score_ppm,
        reason,
        tokens,
    )
}

pub fn tx(signer: u8, g: &Genesis, nonce: u64, body: TxBody) -> SignedTx {
    SignedTx::sign(&key(signer), g.chain_id(), nonce, body)
}

/// Accepts a proof whose body is exactly `b"guilty"`.
pub struct TestChecker;

impl FraudProofChecker for TestChecker {
    fn check(&self, proof: &FraudProof) -> Result<(), String> {
        if proof.body == b"guilty" {
            Ok(())
        } else {
            Err("not guilty".into())
        }
    }
}

pub fn proof(round: u64, accused: u8, body: &[u8]) -> FraudProof {
    FraudProof {
        version: ledger::WIRE_VERSION,
        run: RUN,
        round: RoundNumber(round),
        accused: peer(accused),
        kind: 1,
        body: body.to_vec(),
    }
}
