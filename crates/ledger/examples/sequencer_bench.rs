//! Local-sequencer benchmark (no consensus): transactions per second through the state machine
//! alone (reference) and through the sequencer with durable redb commits, then `verify_chain`
//! time per 1,000 blocks against a replay that skips signature-of-finality checks.
//!
//! Run: `cargo run --release -p commonweight-ledger --example sequencer_bench -- [BLOCKS] [TXS_PER_BLOCK]`

use std::time::Instant;

use ed25519_dalek::SigningKey;
use ledger::{
    Genesis, LedgerState, NoFraudProofs, Replica, Sequencer, SignedTx, Store, TxBody, Verdict,
};
use types::{Hash32, PeerId, RoundNumber, RunId};

const RUN: RunId = RunId(Hash32([7; 32]));

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let blocks: u64 = args
        .next()
        .map(|s| s.parse().expect("BLOCKS"))
        .unwrap_or(1000);
    let per_block: u64 = args
        .next()
        .map(|s| s.parse().expect("TXS_PER_BLOCK"))
        .unwrap_or(10);
    let g = Genesis {
        version: ledger::WIRE_VERSION,
        run: RUN,
        validators: vec![ledger::peer_of(&key(200))],
        verifiers: vec![ledger::peer_of(&key(100))],
        verifier_quorum: 1,
        namespace: "commonweight-ledger-bench".into(),
    };
    let verifier = key(100);
    let txs: Vec<SignedTx> = (0..blocks * per_block)
        .map(|i| {
            let mut trainer = [0u8; 32];
            trainer[..8].copy_from_slice(&(i % 1000).to_le_bytes());
            let v = Verdict::sign(
                &verifier,
                RUN,
                RoundNumber(i / 1000),
                PeerId(trainer),
                true,
                900_000,
                "",
                4096,
            );
            SignedTx::sign(
                &verifier,
                g.chain_id(),
                i,
                TxBody::RecordVerdicts { verdicts: vec![v] },
            )
        })
        .collect();

    let started = Instant::now();
    let mut state = LedgerState::new(&g);
    for tx in &txs {
        state.apply(tx, &NoFraudProofs).expect("valid");
    }
    let direct_s = started.elapsed().as_secs_f64();

    let dir = tempfile::tempdir().expect("tempdir");
    let mut replica = Replica::open(dir.path(), &g, Box::new(NoFraudProofs)).expect("open");
    let started = Instant::now();
    {
        let mut sequencer = Sequencer::new(&mut replica, key(200)).expect("sequencer");
        for chunk in txs.chunks(per_block as usize) {
            sequencer.sequence(chunk.to_vec()).expect("sequence");
        }
    }
    let sequenced_s = started.elapsed().as_secs_f64();
    assert_eq!(replica.state().root(), state.root());
    drop(replica);

    let store = Store::open(dir.path()).expect("store");
    let started = Instant::now();
    let report = ledger::verify_chain(&store, &NoFraudProofs).expect("verify");
    let verify_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    ledger::replay::replay_store(&store, &NoFraudProofs, false).expect("replay");
    let replay_s = started.elapsed().as_secs_f64();
    let n = txs.len() as f64;
    let per_k = |s: f64| s * 1000.0 / report.blocks as f64;
    println!("blocks {blocks}, transactions {}", txs.len());
    println!(
        "state machine alone:            {:>10.0} tx/s",
        n / direct_s
    );
    println!(
        "sequencer + redb (fsync/block): {:>10.0} tx/s  ratio {:.3}",
        n / sequenced_s,
        direct_s / sequenced_s
    );
    println!("verify_chain: {:.3} s per 1,000 blocks; replay without finality checks {:.3} s per 1,000 blocks; ratio {:.2}", per_k(verify_s), per_k(replay_s), verify_s / replay_s);
}
