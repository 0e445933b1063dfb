//! Four round machines wired together by a perfect in-memory network: rounds settle with equal hashes, and
//! hostile bytes are counted, never a panic.

use std::collections::VecDeque;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use round::{Action, Boot, GenesisConfig, Input, RoundMachine, Verdict};
use types::{Hash32, PeerId};

fn config(founders: Vec<PeerId>) -> GenesisConfig {
    GenesisConfig {
        run_name: "t".into(),
        model_preset: "standin".into(),
        genesis_model_hash: Hash32::of(b"g"),
        dataset_cid: Hash32::of(b"d"),
        dataset_shards: 16,
        shards_per_trainer: 2,
        codec_id: 0,
        inner_steps: 1,
        committee_size: 8,
        quorum_permille: 667,
        phase_min_ms: 10,
        phase_max_ms: 1_000,
        deadline_mad_k_millis: 3_000,
        founders,
        spec_digest: Hash32::ZERO,
    }
}

struct Cluster {
    machines: Vec<RoundMachine>,
    queue: VecDeque<(usize, Input)>,
    settled: Vec<Vec<Hash32>>,
}

impl Cluster {
    fn new(n: u8) -> Cluster {
        let keys: Vec<SigningKey> = (1..=n).map(|i| SigningKey::from_bytes(&[i; 32])).collect();
        let mut founders: Vec<PeerId> = keys.iter().map(round::wire::peer_id_of).collect();
        founders.sort();
        let config = Arc::new(config(founders));
        let mut cluster = Cluster {
            machines: Vec::new(),
            queue: VecDeque::new(),
            settled: vec![Vec::new(); n as usize],
        };
        for (i, key) in keys.into_iter().enumerate() {
            let (machine, actions) =
                RoundMachine::new(Arc::clone(&config), key, 0, Boot::Genesis).unwrap();
            cluster.machines.push(machine);
            cluster.apply(i, actions);
        }
        cluster
    }

    fn apply(&mut self, from: usize, actions: Vec<Action>) {
        let n = self.machines.len();
        for action in actions {
            match action {
                Action::Broadcast { bytes, .. } => (0..n)
                    .filter(|&j| j != from)
                    .for_each(|j| self.queue.push_back((j, Input::Message(bytes.clone())))),
                Action::SendTo { .. }
                | Action::Resync { .. }
                | Action::FetchUpdates { .. }
                | Action::WakeAt(_) => {}
                Action::Train {
                    round,
                    base_model_hash,
                    ..
                } => {
                    let cid = Hash32::of(
                        &[
                            self.machines[from].peer_id().0.as_slice(),
                            &round.0.to_le_bytes(),
                        ]
                        .concat(),
                    );
                    let input = Input::Trained {
                        round,
                        base_model_hash,
                        update_cid: cid,
                        update_bytes: 100,
                        claimed_loss: 1.0,
                    };
                    self.queue.push_back((from, input));
                }
                Action::PublishUpdate { round, update_cid } => {
                    let trainer = self.machines[from].peer_id();
                    for j in 0..n {
                        let input = Input::UpdateReceived {
                            round,
                            trainer,
                            update_cid,
                            update_bytes: 100,
                            verdict: Verdict::Accepted,
                        };
                        self.queue.push_back((j, input));
                    }
                }
                Action::Aggregate {
                    round,
                    proposal_digest,
                    base_model_hash,
                    updates,
                } => {
                    let mut bytes = base_model_hash.0.to_vec();
                    updates
                        .iter()
                        .for_each(|(p, c)| bytes.extend_from_slice(&[p.0, c.0].concat()));
                    let input = Input::Aggregated {
                        round,
                        proposal_digest,
                        model_hash: Hash32::of(&bytes),
                    };
                    self.queue.push_back((from, input));
                }
                Action::Settled(s) => self.settled[from].push(s.model_hash),
            }
        }
    }

    fn run(&mut self, until_rounds: usize) {
        let mut now = 0;
        for _ in 0..400 {
            // With instant delivery rounds follow each other at the same instant: stop once enough settled.
            while let Some((i, input)) = self.queue.pop_front() {
                let actions = self.machines[i].handle(now, input);
                self.apply(i, actions);
                if self.settled.iter().all(|s| s.len() >= until_rounds) {
                    return;
                }
            }
            now += 50;
            for i in 0..self.machines.len() {
                let actions = self.machines[i].handle(now, Input::Tick);
                self.apply(i, actions);
            }
        }
        let states: Vec<String> = self.machines.iter().map(|m| m.describe()).collect();
        panic!(
            "rounds did not settle: {:?} {states:#?}",
            self.settled.iter().map(|s| s.len()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn four_machines_settle_rounds_with_equal_hashes() {
    let mut cluster = Cluster::new(4);
    cluster.run(5);
    let first = &cluster.settled[0][..5];
    for other in &cluster.settled {
        assert_eq!(&other[..5], first);
    }
    assert!(
        first.windows(2).all(|w| w[0] != w[1]),
        "each round moves the model"
    );
}

#[test]
fn hostile_bytes_are_counted_not_fatal() {
    let mut cluster = Cluster::new(4);
    let mut state = 0x1234_5678_u64;
    let valid: Vec<u8> = {
        cluster.run(1);
        let m = &mut cluster.machines[0];
        let _ = m.handle(0, Input::Tick);
        vec![round::wire::WIRE_VERSION, 3, 1, 2, 3]
    };
    for i in 0..2_000 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = (state >> 40) as usize % 300;
        let mut bytes: Vec<u8> = (0..len).map(|k| (state >> (k % 56)) as u8).collect();
        if i % 2 == 0 && !bytes.is_empty() {
            bytes[0] = valid[0];
        }
        let _ = cluster.machines[1].handle(1_000, Input::Message(bytes));
    }
    assert!(cluster.machines[1].stats().decode_errors > 1_000);
    cluster.run(3);
}
