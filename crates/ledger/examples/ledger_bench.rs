//! Ledger throughput and verify benchmark.
//!
//! 1. Finalized transactions per second with 4 simplex validators in one process (commonware's
//!    deterministic runtime: one thread, so all four validators share one core; simulated p2p links
//!    with 1 ms virtual latency; wall-clock time), against the same transactions applied straight
//!    to the state machine (the ceiling) in the same run.
//! 2. `verify_chain` time per 1,000 blocks on a validator's store, against a replay that skips
//!    the certificate checks, in the same run.
//!
//! Run: `cargo run --release -p commonweight-ledger --features simplex --example ledger_bench -- [TXS]`

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::{Duration, Instant};

use commonware_cryptography::ed25519::PublicKey;
use commonware_p2p::simulated::{Config as NetConfig, Link, Network};
use commonware_runtime::{deterministic, Clock, Quota, Runner, Supervisor as _};
use ed25519_dalek::SigningKey;
use ledger::consensus::{public_key, AppConfig, Behavior, Mempool, Observer};
use ledger::consensus::{CHANNEL_BLOCKS, CHANNEL_CERTIFICATES, CHANNEL_RESOLVER, CHANNEL_VOTES};
use ledger::validator::{self, Channels};
use ledger::{Genesis, LedgerState, NoFraudProofs, SignedTx, Store, TxBody, Verdict};
use types::{Hash32, PeerId, RoundNumber, RunId};

const RUN: RunId = RunId(Hash32([7; 32]));

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn genesis() -> Genesis {
    Genesis {
        version: ledger::WIRE_VERSION,
        run: RUN,
        validators: (0..4).map(|i| ledger::peer_of(&key(200 + i))).collect(),
        verifiers: vec![ledger::peer_of(&key(100))],
        verifier_quorum: 1,
        namespace: "commonweight-ledger-bench".into(),
    }
}

/// `count` valid transactions: each records one accepted verdict for a distinct (round, peer).
fn transactions(g: &Genesis, count: u64) -> Vec<SignedTx> {
    let verifier = key(100);
    (0..count)
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
        .collect()
}

fn main() {
    let count: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("TXS must be a number"))
        .unwrap_or(20_000);
    let g = genesis();
    let txs = transactions(&g, count);

    // Reference: the state machine alone.
    let started = Instant::now();
    let mut state = LedgerState::new(&g);
    for tx in &txs {
        state
            .apply(tx, &NoFraudProofs)
            .expect("benchmark transactions are valid");
    }
    let direct_s = started.elapsed().as_secs_f64();
    let expected_root = state.root();

    let dir = tempfile::tempdir().expect("tempdir");
    let dirs: Vec<_> = (0..4).map(|i| dir.path().join(format!("v{i}"))).collect();
    // commonware's simulated p2p network binds simulated sockets at random addresses, which only
    // the deterministic runtime provides (on tokio it fails with `BindFailed`). So the cluster runs
    // on the deterministic runtime: one thread, virtual network time, wall-clock measured here.
    let runner = deterministic::Runner::timed(Duration::from_secs(24 * 3600));
    let g2 = g.clone();
    let dirs2 = dirs.clone();
    let (consensus_s, height) = runner.start(|context| async move {
        let g = g2;
        let pks: Vec<PublicKey> = g
            .validators
            .iter()
            .map(|p| public_key(p).unwrap())
            .collect();
        let cfg = NetConfig {
            max_size: ledger::consensus::block_message_bytes_max() as u32,
            max_peers_per_set: NonZeroUsize::new(5).unwrap(),
            disconnect_on_block: false,
            tracked_peer_sets: NonZeroUsize::new(1).unwrap(),
        };
        let (network, oracle) =
            Network::new_with_peers(context.child("network"), cfg, pks.clone()).await;
        network.start();
        let link = Link {
            latency: Duration::from_millis(1),
            jitter: Duration::ZERO,
            success_rate: commonware_utils::probability!(1.0),
        };
        for a in &pks {
            for b in &pks {
                if a != b {
                    oracle
                        .add_link(a.clone(), b.clone(), link.clone())
                        .await
                        .unwrap();
                }
            }
        }
        let quota = Quota::per_second(NonZeroU32::new(1_000_000).unwrap());
        let mut observers = Vec::new();
        let mut mempools = Vec::new();
        let mut running = Vec::new();
        for (i, pk) in pks.iter().enumerate() {
            let control = oracle.control(pk.clone());
            let votes = control.register(CHANNEL_VOTES, quota).await.unwrap();
            let certificates = control.register(CHANNEL_CERTIFICATES, quota).await.unwrap();
            let resolver = control.register(CHANNEL_RESOLVER, quota).await.unwrap();
            let blocks = control.register(CHANNEL_BLOCKS, quota).await.unwrap();
            let observer = Observer::default();
            let mempool = Mempool::new();
            let app = AppConfig {
                genesis: g.clone(),
                data_dir: dirs2[i].clone(),
                checker: Box::new(NoFraudProofs),
                mempool: mempool.clone(),
                observer: observer.clone(),
                behavior: Behavior::Honest,
            };
            let secret = [200 + i as u8; 32];
            let ctx = context.child("validator").with_attribute("index", i);
            running.push(
                validator::start(
                    ctx,
                    &secret,
                    app,
                    control,
                    Channels {
                        votes,
                        certificates,
                        resolver,
                        blocks,
                    },
                )
                .unwrap(),
            );
            observers.push(observer);
            mempools.push(mempool);
        }
        let started = Instant::now();
        for tx in &txs {
            for mempool in &mempools {
                mempool.submit(&g, tx.clone()).unwrap();
            }
        }
        let submitted_s = started.elapsed().as_secs_f64();
        loop {
            let all_done = observers.iter().all(|o| {
                o.get()
                    .state
                    .is_some_and(|s| s.nonce(&ledger::peer_of(&key(100))) == count)
            });
            if all_done {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "cluster did not finalize all transactions in 600 s"
            );
            context.sleep(Duration::from_millis(10)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        println!("submission (stateless checks, 4 mempools) took {submitted_s:.3} s of that");
        let height = observers[0].get().height;
        for o in &observers {
            assert_eq!(
                o.get().state.unwrap().root(),
                expected_root,
                "a validator's state differs from the direct replay"
            );
        }
        for r in running {
            r.abort();
        }
        (elapsed, height)
    });

    println!("transactions: {count}, finalized blocks: {height}");
    println!(
        "state machine alone:        {:>10.0} tx/s  ({direct_s:.3} s)",
        count as f64 / direct_s
    );
    println!("4 simplex validators:       {:>10.0} tx/s  ({consensus_s:.3} s, all 4 replicas executed and stored)", count as f64 / consensus_s);
    println!(
        "ratio consensus/direct:     {:>10.3}",
        direct_s / consensus_s
    );

    let store = Store::open(&dirs[0]).expect("open validator 0 store");
    let started = Instant::now();
    let report = ledger::verify_chain(&store, &NoFraudProofs).expect("verify");
    let verify_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    ledger::replay::replay_store(&store, &NoFraudProofs, false).expect("replay");
    let replay_s = started.elapsed().as_secs_f64();
    let per_k = |s: f64| s * 1000.0 / report.blocks as f64;
    println!(
        "verify (full, {} blocks, {} certificates): {:.3} s per 1,000 blocks; replay without certificate checks: {:.3} s per 1,000 blocks; ratio {:.2}",
        report.blocks,
        report.certificates,
        per_k(verify_s),
        per_k(replay_s),
        verify_s / replay_s
    );
}
