//! Four ledger validators replicated by commonware simplex on commonware's deterministic
//! runtime and simulated network: crash, restart and catch-up, partition, Byzantine validators.
//! Virtual time, so these run in seconds; every validator stores its chain in a real redb file
//! and `verify_chain` re-checks each one (all certificates) at the end.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use commonware_cryptography::ed25519::PublicKey;
use commonware_p2p::simulated::{Config as NetConfig, Link, Network, Oracle};
use commonware_runtime::{deterministic, Clock, Quota, Runner, Supervisor as _};
use ledger::consensus::{
    public_key, AppConfig, Behavior, Mempool, Observer, CHANNEL_BLOCKS, CHANNEL_CERTIFICATES,
    CHANNEL_RESOLVER, CHANNEL_VOTES,
};
use ledger::validator::{self, Channels, Running};
use ledger::{verify_chain, Genesis, NoFraudProofs, Store, TxBody};
use std::num::{NonZeroU32, NonZeroUsize};
use types::{Hash32, PeerId};

const N: u8 = 4;

fn quota() -> Quota {
    Quota::per_second(NonZeroU32::new(100_000).unwrap())
}

fn link() -> Link {
    Link {
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(2),
        success_rate: commonware_utils::probability!(1.0),
    }
}

struct Node {
    secret: [u8; 32],
    pk: PublicKey,
    dir: std::path::PathBuf,
    mempool: Mempool,
    observer: Observer,
    running: Option<Running>,
}

async fn start_node(
    context: &deterministic::Context,
    oracle: &mut Oracle<PublicKey, deterministic::Context>,
    g: &Genesis,
    node: &mut Node,
    behavior: Behavior,
    incarnation: u32,
) {
    let control = oracle.control(node.pk.clone());
    let votes = control.register(CHANNEL_VOTES, quota()).await.unwrap();
    let certificates = control
        .register(CHANNEL_CERTIFICATES, quota())
        .await
        .unwrap();
    let resolver = control.register(CHANNEL_RESOLVER, quota()).await.unwrap();
    let blocks = control.register(CHANNEL_BLOCKS, quota()).await.unwrap();
    let app = AppConfig {
        genesis: g.clone(),
        data_dir: node.dir.clone(),
        checker: Box::new(NoFraudProofs),
        mempool: node.mempool.clone(),
        observer: node.observer.clone(),
        behavior,
    };
    let ctx = context
        .child("validator")
        .with_attribute("pk", &node.pk)
        .with_attribute("incarnation", incarnation);
    let running = validator::start(
        ctx,
        &node.secret,
        app,
        control,
        Channels {
            votes,
            certificates,
            resolver,
            blocks,
        },
    )
    .unwrap();
    node.running = Some(running);
}

async fn set_links(
    oracle: &mut Oracle<PublicKey, deterministic::Context>,
    nodes: &[Node],
    isolated: Option<usize>,
    add: bool,
) {
    for (i, a) in nodes.iter().enumerate() {
        for (j, b) in nodes.iter().enumerate() {
            if i == j {
                continue;
            }
            if let Some(k) = isolated {
                if i != k && j != k {
                    continue;
                }
            }
            if add {
                oracle
                    .add_link(a.pk.clone(), b.pk.clone(), link())
                    .await
                    .unwrap();
            } else {
                oracle
                    .remove_link(a.pk.clone(), b.pk.clone())
                    .await
                    .unwrap();
            }
        }
    }
}

/// Waits (virtual time) until every listed node reached `height`; panics after `limit`.
async fn wait_height(
    context: &deterministic::Context,
    nodes: &[Node],
    which: &[usize],
    height: u64,
    limit: Duration,
) {
    let start = context.current();
    loop {
        if which
            .iter()
            .all(|&i| nodes[i].observer.get().height >= height)
        {
            return;
        }
        let waited = context.current().duration_since(start).unwrap();
        assert!(
            waited < limit,
            "nodes {which:?} did not reach height {height} in {limit:?}: {:?}",
            heights(nodes)
        );
        context.sleep(Duration::from_millis(50)).await;
    }
}

fn heights(nodes: &[Node]) -> Vec<u64> {
    nodes.iter().map(|n| n.observer.get().height).collect()
}

/// The blocks a validator stored, oldest first.
fn stored_blocks(dir: &std::path::Path) -> Vec<(ledger::Block, ledger::Finality)> {
    let store = Store::open(dir).unwrap();
    (1..=store.height().unwrap())
        .map(|h| {
            let record =
                ledger::Record::from_bytes(&store.record_bytes(h).unwrap().unwrap()).unwrap();
            (
                ledger::Block::from_bytes(&record.block).unwrap(),
                record.finality,
            )
        })
        .collect()
}

/// Index of `node` in simplex's ordered participant set: with the default round-robin elector
/// (one view per term, epoch 0) it leads exactly the views `v` with `v % N == index`.
fn leader_index(g: &Genesis, node: &Node) -> u64 {
    ledger::consensus::participants(g)
        .unwrap()
        .iter()
        .position(|pk| *pk == node.pk)
        .unwrap() as u64
}

/// Views of the stored blocks that `node` led.
fn views_led_by(
    g: &Genesis,
    blocks: &[(ledger::Block, ledger::Finality)],
    node: &Node,
) -> Vec<u64> {
    let index = leader_index(g, node);
    blocks
        .iter()
        .map(|(b, _)| b.view)
        .filter(|v| v % N as u64 == index)
        .collect()
}

fn max_height(nodes: &[Node], which: &[usize]) -> u64 {
    which
        .iter()
        .map(|&i| nodes[i].observer.get().height)
        .max()
        .unwrap()
}

/// Submits one verdict transaction per trainer for `round` to every validator's mempool.
fn submit_round(g: &Genesis, nodes: &[Node], round: u64) {
    let verdicts = (1..=3)
        .map(|trainer| verdict(100, round, trainer, true, 500_000, 1000 * trainer as u64))
        .collect();
    let t = tx(100, g, round, TxBody::RecordVerdicts { verdicts });
    for node in nodes {
        node.mempool.submit(g, t.clone()).unwrap();
    }
}

fn make_nodes(dir: &std::path::Path) -> (Genesis, Vec<Node>) {
    let g = genesis(N, 1, 1);
    let nodes = (0..N)
        .map(|i| {
            let secret = [200 + i; 32];
            Node {
                secret,
                pk: public_key(&peer(200 + i)).unwrap(),
                dir: dir.join(format!("v{i}")),
                mempool: Mempool::new(),
                observer: Observer::default(),
                running: None,
            }
        })
        .collect();
    (g, nodes)
}

async fn network(
    context: &deterministic::Context,
    nodes: &[Node],
) -> Oracle<PublicKey, deterministic::Context> {
    let cfg = NetConfig {
        max_size: ledger::consensus::block_message_bytes_max() as u32,
        max_peers_per_set: NonZeroUsize::new(nodes.len() + 1).unwrap(),
        disconnect_on_block: false,
        tracked_peer_sets: NonZeroUsize::new(1).unwrap(),
    };
    let (network, oracle) = Network::new_with_peers(
        context.child("network"),
        cfg,
        nodes.iter().map(|n| n.pk.clone()),
    )
    .await;
    network.start();
    oracle
}

/// Every store verifies (signatures, certificates, state roots) and all agree on the state at
/// the lowest common height.
fn check_stores(g: &Genesis, nodes: &[Node]) -> BTreeMap<PeerId, u64> {
    let mut roots = Vec::new();
    for node in nodes {
        let store = Store::open(&node.dir).unwrap();
        let report = verify_chain(&store, &NoFraudProofs)
            .unwrap_or_else(|e| panic!("{}: {e}", node.dir.display()));
        assert!(report.certificates > 0);
        roots.push((report.blocks, report.state_root));
    }
    let common = roots.iter().map(|r| r.0).min().unwrap();
    assert!(common > 0);
    // Block for block the same chain (no fork), not merely the same state.
    let chains: Vec<Vec<[u8; 32]>> = nodes
        .iter()
        .map(|n| {
            stored_blocks(&n.dir)
                .iter()
                .map(|(b, _)| b.digest())
                .collect()
        })
        .collect();
    for chain in &chains {
        assert_eq!(
            chain[..common as usize],
            chains[0][..common as usize],
            "validators stored different blocks"
        );
    }
    // Replay each store to the common height and compare state roots there.
    let mut at_common = Vec::new();
    for node in nodes {
        let store = Store::open(&node.dir).unwrap();
        let mut state = ledger::LedgerState::new(g);
        for h in 1..=common {
            let record =
                ledger::Record::from_bytes(&store.record_bytes(h).unwrap().unwrap()).unwrap();
            let block = ledger::Block::from_bytes(&record.block).unwrap();
            ledger::replay::execute(&mut state, &block, &NoFraudProofs);
        }
        at_common.push(state);
    }
    for state in &at_common {
        assert_eq!(
            state.root(),
            at_common[0].root(),
            "validators disagree at height {common}"
        );
    }
    // Balances equal minted minus slashed (verify_chain also checks it at every height).
    let state = &at_common[0];
    let balances: u64 = state.accounts.values().map(|a| a.balance).sum();
    assert_eq!(balances, state.total_minted - state.total_slashed);
    at_common[0]
        .accounts
        .iter()
        .map(|(p, a)| (*p, a.balance))
        .collect()
}

#[test]
fn four_validators_survive_a_crash_then_a_partition() {
    let dir = tempfile::tempdir().unwrap();
    let (g, nodes) = make_nodes(dir.path());
    let g2 = g.clone();
    let executor = deterministic::Runner::timed(Duration::from_secs(900));
    let mut nodes = executor.start(|context| async move {
        let g = g2;
        let mut nodes = nodes;
        let mut oracle = network(&context, &nodes).await;
        set_links(&mut oracle, &nodes, None, true).await;
        for node in nodes.iter_mut() {
            start_node(&context, &mut oracle, &g, node, Behavior::Honest, 0).await;
        }
        submit_round(&g, &nodes, 0);
        wait_height(&context, &nodes, &[0, 1, 2, 3], 5, Duration::from_secs(60)).await;

        // Crash validator 3: the other three keep finalizing.
        nodes[3].running.take().unwrap().abort();
        let h = max_height(&nodes, &[0, 1, 2]);
        submit_round(&g, &nodes[..3], 1);
        wait_height(
            &context,
            &nodes,
            &[0, 1, 2],
            h + 10,
            Duration::from_secs(120),
        )
        .await;
        let crashed_at = nodes[3].observer.get().height;

        // Restart it from its own redb file and simplex journal; it catches up by block sync.
        start_node(
            &context,
            &mut oracle,
            &g,
            &mut nodes[3],
            Behavior::Honest,
            1,
        )
        .await;
        let h = max_height(&nodes, &[0, 1, 2]);
        wait_height(&context, &nodes, &[3], h, Duration::from_secs(120)).await;
        assert!(crashed_at < h);
        assert!(
            nodes[3].observer.get().synced_records > 0,
            "validator 3 caught up without block sync?"
        );
        eprintln!(
            "crash: validator 3 stopped at height {crashed_at}, caught up to {h}, synced {} records",
            nodes[3].observer.get().synced_records
        );

        // Partition validator 0 away: 1, 2, 3 keep finalizing.
        set_links(&mut oracle, &nodes, Some(0), false).await;
        let h = max_height(&nodes, &[1, 2, 3]);
        let cut_off_at = nodes[0].observer.get().height;
        let synced_before = nodes[0].observer.get().synced_records;
        submit_round(&g, &nodes[1..], 2);
        wait_height(
            &context,
            &nodes,
            &[1, 2, 3],
            h + 10,
            Duration::from_secs(120),
        )
        .await;
        assert!(
            nodes[0].observer.get().height <= cut_off_at + 1,
            "an isolated validator cannot finalize alone"
        );

        // Heal: validator 0 catches up.
        set_links(&mut oracle, &nodes, Some(0), true).await;
        let h = max_height(&nodes, &[1, 2, 3]);
        wait_height(&context, &nodes, &[0], h, Duration::from_secs(120)).await;
        assert!(nodes[0].observer.get().synced_records > synced_before);
        eprintln!(
            "partition: validator 0 cut off at height {cut_off_at}, others reached {h}, heights {:?}",
            heights(&nodes)
        );
        for node in nodes.iter_mut() {
            node.running.take().unwrap().abort();
        }
        nodes
    });
    let balances = check_stores(&g, &nodes);
    // Three rounds, trainer t credited 1000·t tokens at score 0.5 each round.
    for t in 1..=3u8 {
        assert_eq!(
            balances.get(&peer(t)).copied(),
            Some(3 * 500 * t as u64),
            "trainer {t}"
        );
    }
    tamper_is_caught(&nodes[1]);
    nodes.clear();
}

/// Flips bytes of a stored record that carries a simplex certificate (block bytes, outcomes,
/// state root and the certificate itself); `verify_chain` must refuse every one.
fn tamper_is_caught(node: &Node) {
    let blocks = stored_blocks(&node.dir);
    let height = 1 + blocks
        .iter()
        .position(|(_, f)| matches!(f, ledger::Finality::Simplex { .. }))
        .unwrap() as u64;
    let path = node.dir.join(ledger::store::DB_FILE);
    let pristine = std::fs::read(&path).unwrap();
    let record_len = Store::open(&node.dir)
        .unwrap()
        .record_bytes(height)
        .unwrap()
        .unwrap()
        .len();
    let mut checked = 0;
    for position in (0..record_len).step_by(7).chain([record_len - 1]) {
        std::fs::write(&path, &pristine).unwrap();
        let store = Store::open(&node.dir).unwrap();
        let mut bytes = store.record_bytes(height).unwrap().unwrap();
        bytes[position] ^= 0x01;
        ledger::store::testing_overwrite(&store, height, &bytes).unwrap();
        assert!(
            verify_chain(&store, &NoFraudProofs).is_err(),
            "flipping byte {position} of certified record {height} went unnoticed"
        );
        checked += 1;
    }
    std::fs::write(&path, &pristine).unwrap();
    let store = Store::open(&node.dir).unwrap();
    verify_chain(&store, &NoFraudProofs).unwrap();
    assert!(checked > 20);
    forged_certificate_is_caught(&store);
}

/// The record hash chain has no key: someone with disk access can rewrite records and recompute
/// every link. Only the certificates stop that. Rewrites a consistent chain whose one certificate
/// has a flipped byte (at every position), or is another block's certificate; `verify_chain`
/// must refuse each with a finality error.
fn forged_certificate_is_caught(store: &Store) {
    let records: Vec<ledger::Record> = (1..=store.height().unwrap())
        .map(|h| ledger::Record::from_bytes(&store.record_bytes(h).unwrap().unwrap()).unwrap())
        .collect();
    let certified: Vec<usize> = (0..records.len())
        .filter(|&i| matches!(records[i].finality, ledger::Finality::Simplex { .. }))
        .collect();
    assert!(certified.len() >= 2);
    let target = certified[0];
    let certificate = |i: usize| match &records[i].finality {
        ledger::Finality::Simplex { finalization } => finalization.clone(),
        _ => unreachable!(),
    };
    let mut forgeries: Vec<Vec<u8>> = (0..certificate(target).len())
        .map(|position| {
            let mut bytes = certificate(target);
            bytes[position] ^= 0x01;
            bytes
        })
        .collect();
    forgeries.push(certificate(certified[1]));
    for forged in forgeries {
        let dir = tempfile::tempdir().unwrap();
        let rewritten = Store::create(dir.path(), store.genesis()).unwrap();
        let mut prev_hash = store.genesis().chain_id();
        let mut chain = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            let mut record = record.clone();
            if i == target {
                record.finality = ledger::Finality::Simplex {
                    finalization: forged.clone(),
                };
            }
            record.prev_hash = prev_hash;
            prev_hash = record.hash();
            chain.push(record);
        }
        // One durable write for the whole chain keeps the hundreds of rewrites fast.
        rewritten.append(&chain).unwrap();
        match verify_chain(&rewritten, &NoFraudProofs) {
            Err(ledger::VerifyError::Finality { height, .. }) => {
                assert_eq!(height, target as u64 + 1)
            }
            other => panic!(
                "a forged certificate at height {} gave {other:?}",
                target + 1
            ),
        }
    }
}

#[test]
fn byzantine_validator_cannot_mint_or_fork() {
    let dir = tempfile::tempdir().unwrap();
    let (g, nodes) = make_nodes(dir.path());
    let g2 = g.clone();
    // A verdict signed by trainer 9's own key (not a genesis verifier) crediting itself.
    let forged = verdict(9, 0, 9, true, 1_000_000, 1 << 30);
    let forged_tx = tx(
        9,
        &g,
        0,
        TxBody::RecordVerdicts {
            verdicts: vec![forged],
        },
    );
    let forged_id = forged_tx.id();
    let executor = deterministic::Runner::timed(Duration::from_secs(600));
    let nodes = executor.start(|context| async move {
        let g = g2;
        let mut nodes = nodes;
        let mut oracle = network(&context, &nodes).await;
        set_links(&mut oracle, &nodes, None, true).await;
        for (i, node) in nodes.iter_mut().enumerate() {
            let behavior = if i == 3 {
                Behavior::ForgeMint {
                    forged_verdict_tx: Box::new(forged_tx.clone()),
                }
            } else {
                Behavior::Honest
            };
            start_node(&context, &mut oracle, &g, node, behavior, 0).await;
        }
        submit_round(&g, &nodes, 0);
        // Several full leader rotations, so the Byzantine leader proposes many times.
        wait_height(&context, &nodes, &[0, 1, 2], 20, Duration::from_secs(300)).await;
        for node in nodes.iter_mut() {
            node.running.take().unwrap().abort();
        }
        nodes
    });
    let balances = check_stores(&g, &nodes);
    // The Byzantine leader did propose, and none of its blocks was finalized: every view it
    // led was skipped, and the forged transaction was never ordered.
    let proposed = nodes[3].observer.get().proposed_blocks;
    assert!(
        proposed >= 3,
        "the Byzantine validator proposed {proposed} blocks"
    );
    let forged_id = forged_id;
    for node in &nodes[..3] {
        let blocks = stored_blocks(&node.dir);
        assert!(blocks.len() >= 20);
        assert_eq!(views_led_by(&g, &blocks, &nodes[3]), Vec::<u64>::new());
        assert!(blocks
            .iter()
            .all(|(b, _)| b.txs.iter().all(|t| t.id() != forged_id)));
    }
    eprintln!("forged mint: the Byzantine leader proposed {proposed} blocks, none finalized");
    assert_eq!(
        balances.get(&peer(9)),
        None,
        "the forged verdict minted shares"
    );
    for node in &nodes {
        let state = node.observer.get().state.unwrap();
        assert_eq!(state.total_minted, 500 + 1000 + 1500);
        assert!(state.conservation_holds());
    }
}

/// commonware's own equivocating validator (conflicting notarize votes for random payloads
/// whenever it leads) cannot fork the ledger: honest validators agree block for block.
#[cfg(feature = "simplex-mocks")]
#[test]
fn equivocating_validator_cannot_fork() {
    use commonware_consensus::simplex::elector::RoundRobin;
    use commonware_consensus::simplex::mocks::{equivocator, relay::Relay};
    use commonware_consensus::types::Epoch;
    use commonware_cryptography::Sha256;

    let dir = tempfile::tempdir().unwrap();
    let (g, nodes) = make_nodes(dir.path());
    let g2 = g.clone();
    let executor = deterministic::Runner::timed(Duration::from_secs(600));
    let nodes = executor.start(|context| async move {
        let g = g2;
        let mut nodes = nodes;
        let mut oracle = network(&context, &nodes).await;
        set_links(&mut oracle, &nodes, None, true).await;
        for node in nodes.iter_mut().take(3) {
            start_node(&context, &mut oracle, &g, node, Behavior::Honest, 0).await;
        }
        let byzantine = &nodes[3];
        let control = oracle.control(byzantine.pk.clone());
        let votes = control.register(CHANNEL_VOTES, quota()).await.unwrap();
        let certificates = control
            .register(CHANNEL_CERTIFICATES, quota())
            .await
            .unwrap();
        let scheme = ledger::consensus::Scheme::signer(
            g.namespace.as_bytes(),
            ledger::consensus::participants(&g).unwrap(),
            ledger::consensus::private_key(&byzantine.secret).unwrap(),
        )
        .unwrap();
        let cfg = equivocator::Config::<_, _, Sha256> {
            scheme,
            elector: RoundRobin::<commonware_cryptography::Sha256>::default(),
            epoch: Epoch::new(0),
            relay: std::sync::Arc::new(Relay::new()),
        };
        let _equivocator = equivocator::Equivocator::new(context.child("equivocator"), cfg)
            .start(votes, certificates);
        submit_round(&g, &nodes, 0);
        wait_height(&context, &nodes, &[0, 1, 2], 15, Duration::from_secs(300)).await;
        for node in nodes.iter_mut().take(3) {
            node.running.take().unwrap().abort();
        }
        nodes
    });
    let byzantine_index = leader_index(&g, &nodes[3]);
    let honest: Vec<Node> = nodes.into_iter().take(3).collect();
    let balances = check_stores(&g, &honest);
    // The equivocator's views never finalize a block (its conflicting payloads have no block
    // behind them), and honest validators skip past them.
    for node in &honest {
        let blocks = stored_blocks(&node.dir);
        assert!(blocks.len() >= 15);
        assert!(blocks
            .iter()
            .all(|(b, _)| b.view % N as u64 != byzantine_index));
        let last_view = blocks.last().unwrap().0.view;
        assert!(
            last_view >= 4 + byzantine_index,
            "the equivocator never led"
        );
    }
    assert_eq!(balances.get(&peer(1)).copied(), Some(500));
}

#[allow(dead_code)]
fn unused(_: Hash32) {}
