//! Three `roles::Core`s in one process, wired by a test harness that plays the shell: gossip reaches every
//! other core, training and fetches finish at once, and aggregation is a hash over the base and the agreed
//! update CIDs. No tokio, no model: this checks the core's own logic (announce → fetch → verify → aggregate →
//! settle) and that all cores settle the same rounds on the same model hash.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use node::roles::{Core, Effect, Input, Roles};
use round::{Boot, GenesisConfig, RoundMachine};
use types::{Hash32, PeerId, RoundNumber};

fn genesis(founders: Vec<PeerId>) -> GenesisConfig {
    GenesisConfig {
        run_name: "core-cluster".into(),
        model_preset: "tiny".into(),
        genesis_model_hash: Hash32::of(b"genesis"),
        dataset_cid: Hash32::of(b"dataset"),
        dataset_shards: 16,
        shards_per_trainer: 2,
        codec_id: 5,
        inner_steps: 2,
        committee_size: 8,
        quorum_permille: 1000,
        phase_min_ms: 10,
        phase_max_ms: 5_000,
        deadline_mad_k_millis: 3_000,
        founders,
        spec_digest: Hash32::ZERO,
    }
}

fn fake_aggregate(base: Hash32, updates: &[(PeerId, Hash32)]) -> Hash32 {
    let mut bytes = base.0.to_vec();
    for (p, c) in updates {
        bytes.extend_from_slice(&p.0);
        bytes.extend_from_slice(&c.0);
    }
    Hash32::of(&bytes)
}

#[test]
fn three_cores_settle_the_same_rounds() {
    let keys: Vec<SigningKey> = (1..=3u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]))
        .collect();
    let mut peers: Vec<PeerId> = keys
        .iter()
        .map(|k| PeerId(k.verifying_key().to_bytes()))
        .collect();
    peers.sort();
    let config = Arc::new(genesis(peers.clone()));
    let rounds = 4u64;
    let mut now = 1_000u64;
    let mut cores = Vec::new();
    let mut queue: VecDeque<(usize, Effect)> = VecDeque::new();
    for (i, key) in keys.into_iter().enumerate() {
        let (machine, actions) =
            RoundMachine::new(Arc::clone(&config), key, now, Boot::Genesis).unwrap();
        let (core, effects) = Core::new(machine, Arc::clone(&config), Roles::ALL, rounds, actions);
        cores.push(core);
        queue.extend(effects.into_iter().map(|e| (i, e)));
    }
    let ids: Vec<PeerId> = cores.iter().map(|c| c.machine().peer_id()).collect();
    let mut settled: BTreeMap<(usize, u64), Hash32> = BTreeMap::new();
    let mut wakes: Vec<Option<u64>> = vec![None; cores.len()];
    for _step in 0..200_000 {
        if settled.len() as u64 == 3 * rounds {
            break;
        }
        let Some((i, effect)) = queue.pop_front() else {
            // Nothing to do: jump to the earliest wake.
            let next = wakes.iter().flatten().min().copied().unwrap_or(now + 10);
            now = now.max(next);
            for (j, wake) in wakes.iter_mut().enumerate() {
                if wake.is_some_and(|w| w <= now) {
                    *wake = None;
                    let effects = cores[j].handle(now, Input::Tick);
                    queue.extend(effects.into_iter().map(|e| (j, e)));
                }
            }
            continue;
        };
        let mut deliver = |j: usize, input: Input, queue: &mut VecDeque<(usize, Effect)>| {
            let effects = cores[j].handle(now, input);
            queue.extend(effects.into_iter().map(|e| (j, e)));
        };
        match effect {
            Effect::Publish(data) => {
                for j in 0..ids.len() {
                    if j != i {
                        deliver(
                            j,
                            Input::Gossip {
                                source: ids[i],
                                data: data.clone(),
                            },
                            &mut queue,
                        );
                    }
                }
            }
            Effect::Train {
                round,
                base_model_hash,
                ..
            } => {
                let cid = Hash32::of(&[&ids[i].0[..], &round.0.to_le_bytes()].concat());
                let input = Input::Trained {
                    round,
                    base_model_hash,
                    update_cid: cid,
                    update_bytes: 100,
                    claimed_loss: 1.0,
                    replay: Hash32::ZERO,
                };
                deliver(i, input, &mut queue);
            }
            Effect::Fetch {
                round,
                trainer,
                cid,
                ..
            } => {
                deliver(
                    i,
                    Input::BlobFetched {
                        round,
                        trainer,
                        cid,
                        bytes: 100,
                    },
                    &mut queue,
                );
            }
            Effect::Verify {
                round,
                trainer,
                cid,
                bytes,
                ..
            } => {
                deliver(
                    i,
                    Input::Verified {
                        round,
                        trainer,
                        cid,
                        bytes,
                        accepted: true,
                        score: None,
                    },
                    &mut queue,
                );
            }
            Effect::Aggregate {
                round,
                proposal_digest,
                base_model_hash,
                updates,
            } => {
                let model_hash = fake_aggregate(base_model_hash, &updates);
                deliver(
                    i,
                    Input::Aggregated {
                        round,
                        proposal_digest,
                        model_hash,
                    },
                    &mut queue,
                );
            }
            Effect::Settled {
                settled: s,
                snapshot,
            } => {
                assert_eq!(snapshot.model_hash, s.model_hash);
                assert_eq!(snapshot.next_round, RoundNumber(s.round.0 + 1));
                assert_eq!(s.included.len(), 3, "every trainer's update is included");
                settled.insert((i, s.round.0), s.model_hash);
            }
            Effect::FetchSnapshot { .. } | Effect::Adopted(_) => {
                panic!("no node should fall behind in a fault-free cluster")
            }
            Effect::CheckFraud { .. } => panic!("nobody proves fraud in an honest cluster"),
            Effect::WakeAt(at) => {
                wakes[i] = Some(wakes[i].map_or(at, |w| w.min(at)));
            }
        }
    }
    assert!(
        cores.iter().all(|c| c.finished()),
        "the cluster did not finish {rounds} rounds"
    );
    for round in 0..rounds {
        let hashes: Vec<Hash32> = (0..3).map(|i| settled[&(i, round)]).collect();
        assert!(
            hashes.windows(2).all(|w| w[0] == w[1]),
            "round {round}: {hashes:?}"
        );
    }
    for core in &cores {
        assert_eq!(core.stats().rounds_settled, rounds);
        assert_eq!(core.stats().updates_rejected, 0);
    }
}
