//! The replay spot check's production executor (`node::verifier_model::WorkloadStep`) against the node's own
//! training path: every inner step of a real `Workload::train_round` (tiny model, prepared dataset, the run's round
//! seed and data assignment) is re-executed from its committed state bytes bit for bit; a trainer that altered its
//! state after one step and trained on from there is caught at exactly that step; hostile state bytes give a
//! typed error. And the verifier's copy gate (`node::copy_gate`) on the same real updates: a trainer's next round
//! passes it, a replay or a scaled copy of its last agreed update does not.

use std::path::Path;

use node::copy_gate::{CopyGate, CopyRejection};
use node::runspec;
use node::verifier_model::{parse_train_state, train_state_bytes, WorkloadStep};
use node::work::Workload;
use node::Run;
use store::LocalStore;
use types::limits::store::QUOTA_BYTES_DEFAULT;
use types::{Hash32, PeerId, RoundNumber};
use verify::{StepContext, StepExecutor};

const INNER_STEPS: u32 = 4;

fn workload(dir: &Path) -> Workload {
    let text_dir = dir.join("text");
    std::fs::create_dir_all(&text_dir).unwrap();
    let words = ["to", "be", "or", "not", "that", "is", "the", "question"];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut text = String::new();
    for _ in 0..12_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push_str(words[(state % words.len() as u64) as usize]);
        text.push(if state % 11 == 0 { '\n' } else { ' ' });
    }
    std::fs::write(text_dir.join("a.txt"), text).unwrap();
    let tokenizer = data::TokenizerSpec::parse("bytes").unwrap();
    let dataset = data::prepare(&[text_dir], tokenizer, &dir.join("prepared"), 0.1, 0).unwrap();
    let config: node::RunConfig = serde_json::from_value(serde_json::json!({
        "data": dataset.dir,
        "founders": ["11".repeat(32)],
        "shards": 8,
        "rounds": 3,
        "inner_steps": INNER_STEPS,
    }))
    .unwrap();
    let store = LocalStore::open(dir.join("store"), QUOTA_BYTES_DEFAULT).unwrap();
    let spec = runspec::init(&config, Some(&store)).unwrap();
    let run = Run::from_spec(spec).unwrap();
    Workload::open(&run).unwrap()
}

/// The shards `peer` trains on in the round with `seed`, as the round machine assigns them.
fn assigned(run: &Run, seed: Hash32, peer: PeerId) -> Vec<u32> {
    round::assign_data(
        seed,
        peer,
        run.genesis.dataset_cid,
        run.genesis.dataset_shards,
        run.genesis.shards_per_trainer,
    )
}

#[test]
fn every_inner_step_of_a_real_round_replays_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let work = workload(tmp.path());
    let run = &work.run;
    let theta = work.genesis_params().to_vec();
    let peer = PeerId([7; 32]);
    // A late round, trained by a fresh trainer (as a node that just joined): its learning rates are the run's for
    // this round, which the replay derives from the round, not from the trainer's own step count.
    let round = RoundNumber(2);
    let seed = round::round_seed(run.run_id, round, Hash32::of_f32s(&theta));
    let data_ids = assigned(run, seed, peer);

    // The trainer's round, exactly as a node trains it, with the state after every step.
    let mut trainer = work.new_trainer(&theta, 1).unwrap();
    let mut feedback = work.new_feedback();
    let mut states = Vec::new();
    work.train_round_observed(
        &mut trainer,
        &mut feedback,
        round,
        &theta,
        seed,
        &data_ids,
        |t| states.push(train_state_bytes(t)),
    )
    .unwrap();
    assert_eq!(trainer.schedule_step(), 3 * u64::from(INNER_STEPS));
    assert_eq!(states.len(), INNER_STEPS as usize + 1);

    let mut executor = WorkloadStep::new(&work, 1);
    let ctx = |step: u32| StepContext {
        run: run.run_id,
        round,
        round_seed: seed,
        peer,
        data_ids: data_ids.iter().map(|&d| u64::from(d)).collect(),
        step,
    };
    for step in 0..INNER_STEPS {
        let replayed = executor
            .execute(&ctx(step), &states[step as usize])
            .unwrap();
        assert!(
            replayed == states[step as usize + 1],
            "step {step} does not replay bit for bit"
        );
    }

    // The same step replayed as if in round 0 (the warmup's learning rate) does not match.
    let early = StepContext {
        round: RoundNumber(0),
        ..ctx(1)
    };
    assert!(executor.execute(&early, &states[1]).unwrap() != states[2]);

    // A trainer that nudged its parameters after step 2: the replay of step 2 no longer matches, the others do.
    let mut altered = states.clone();
    let n = work.param_count();
    let (mut params, opt) = parse_train_state(&altered[3], n).unwrap();
    params[0] += 1e-3;
    let mut bytes: Vec<u8> = params.iter().flat_map(|v| v.to_le_bytes()).collect();
    bytes.extend_from_slice(&altered[3][4 * n..]);
    assert_eq!(opt.step, 3);
    altered[3] = bytes;
    // The cheater trains on from its altered state, so every later step is consistent with its log.
    for step in 3..INNER_STEPS {
        altered[step as usize + 1] = executor
            .execute(&ctx(step), &altered[step as usize])
            .unwrap();
    }
    let mismatched: Vec<u32> = (0..INNER_STEPS)
        .filter(|&step| {
            executor
                .execute(&ctx(step), &altered[step as usize])
                .unwrap()
                != altered[step as usize + 1]
        })
        .collect();
    assert_eq!(
        mismatched,
        vec![2],
        "the edit is seen where it was made, and only there"
    );
    let distance = executor.distance(&altered[3], &states[3]).unwrap();
    assert!(distance > 0.0 && distance < 1e-2, "{distance}");

    // Hostile state bytes: typed errors, no panic.
    assert!(executor.execute(&ctx(0), &states[0][..17]).is_err());
    assert!(executor.execute(&ctx(0), &[]).is_err());
    let stranger = StepContext {
        data_ids: vec![u64::MAX],
        ..ctx(0)
    };
    assert!(executor.execute(&stranger, &states[0]).is_err());
    // A round and optimizer step at the end of the counters (a peer names both): no overflow, no panic.
    let mut last_step = states[0].clone();
    let at = last_step.len() - 8;
    last_step[at..].copy_from_slice(&u64::MAX.to_le_bytes());
    let far = StepContext {
        round: RoundNumber(u64::MAX),
        ..ctx(0)
    };
    assert!(executor.execute(&far, &last_step).is_ok());
    assert_eq!(executor.repro_class().threads, 1);
}

#[test]
fn a_trainers_next_round_passes_the_copy_gate_and_a_replay_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let work = workload(tmp.path());
    let run = &work.run;
    let peer = PeerId([7; 32]);
    let mut trainer = work.new_trainer(work.genesis_params(), 1).unwrap();
    let mut feedback = work.new_feedback();
    let mut theta = work.genesis_params().to_vec();
    let mut gate = CopyGate::new(CopyGate::seed_of(run.run_id.0));
    let mut agreed = Vec::new();
    // Two rounds of one trainer, as a node trains them: its AdamW moments and error feedback carry over, so its
    // updates are correlated, and each is gated against the rounds settled before it.
    for round in [RoundNumber(0), RoundNumber(1)] {
        let seed = round::round_seed(run.run_id, round, Hash32::of_f32s(&theta));
        let data_ids = assigned(run, seed, peer);
        let update = work
            .train_round(&mut trainer, &mut feedback, round, &theta, seed, &data_ids)
            .unwrap();
        let (_, delta) = work.check_update(&update.blob, None).unwrap();
        let cid = Hash32::of(&update.blob);
        let sketch = verify::similarity::sketch(&delta, gate.seed());
        if let Some(previous) = agreed.last() {
            let cosine = verify::similarity::cosine(&sketch, previous);
            eprintln!(
                "sketch cosine of round {} with round {}: {cosine:.3}",
                round.0,
                round.0 - 1
            );
        }
        gate.check(round, peer, &cid, &sketch).unwrap();
        gate.record(round, peer, cid, sketch.clone());
        gate.settle(round, &[peer]);
        agreed.push(sketch);
        theta = theta.iter().zip(&delta).map(|(t, d)| t - d).collect();
        // The replay of this round's agreed blob, and a scaled, sign-flipped copy of it, are refused from now on.
        assert!(matches!(
            gate.check(RoundNumber(round.0 + 1), peer, &cid, agreed.last().unwrap()),
            Err(CopyRejection::Replayed { first_peer, .. }) if first_peer == peer
        ));
        let scaled: Vec<f32> = delta.iter().map(|d| -3.0 * d).collect();
        let copy = verify::similarity::sketch(&scaled, gate.seed());
        assert!(matches!(
            gate.check(RoundNumber(round.0 + 1), peer, &Hash32::of(b"re-encoded"), &copy),
            Err(CopyRejection::Copy { of_round, .. }) if of_round == round
        ));
    }
}

/// Drives a spot check offline, as `spot_run::run_check` does over the network: states come from the trainer's
/// blob store, each with the path the verifier builds from the record's leaves.
fn spot_check_offline(
    work: &Workload,
    dir: &node::persist::RunDir,
    record: &node::spot_check::ReplayRecord,
    check: &verify::replay::SpotCheck,
    seed: Hash32,
) -> verify::replay::ReplayOutcome {
    use verify::replay::{ReplayAction, ReplayInput, ReplaySession};
    let key = verify::NodeKey::from_secret([3; 32]);
    let mut executor = WorkloadStep::new(work, 1);
    let (mut session, mut actions) =
        ReplaySession::start(check, record.commitment.clone(), seed).unwrap();
    loop {
        match actions.pop().expect("the session asks or ends") {
            ReplayAction::Finished(outcome) => return outcome,
            ReplayAction::Fetch { step, .. } => {
                let leaf = record.leaves[step as usize];
                let input = match dir.read_blob(&leaf) {
                    Some(state) => ReplayInput::Fetched {
                        step,
                        state,
                        path: verify::merkle::step_path(&record.leaves, step as usize),
                    },
                    None => ReplayInput::FetchFailed { step },
                };
                actions = session.handle(input, &mut executor, &key).unwrap();
            }
        }
    }
}

#[test]
fn a_recorded_round_serves_its_drawn_states_and_a_wrong_data_trainer_is_proven() {
    use node::spot_check::{RecordExpectation, ReplayRecord};
    use node::spot_run::{serve_states, train_round_recorded, TrainJob};
    use node::work::{Attacker, LocalTrainer, Misbehaviour};
    use verify::replay::{ReplayOutcome, SpotCheck};

    let tmp = tempfile::tempdir().unwrap();
    let work = workload(tmp.path());
    let run = &work.run;
    let dir = node::persist::RunDir::open(&tmp.path().join("node"), run.run_id).unwrap();
    let theta = work.genesis_params().to_vec();
    let base = Hash32::of_f32s(&theta);
    let round = RoundNumber(1);
    let seed = round::round_seed(run.run_id, round, base);
    for (secret, attack) in [(5u8, None), (6u8, Some(Misbehaviour::WrongData))] {
        let key = verify::NodeKey::from_secret([secret; 32]);
        let peer = key.peer_id();
        let data_ids = assigned(run, seed, peer);
        let mut local = LocalTrainer {
            trainer: work.new_trainer(&theta, 1).unwrap(),
            feedback: work.new_feedback(),
            attacker: attack.map(Attacker::new),
        };
        let job = TrainJob {
            work: &work,
            dir: &dir,
            key: &key,
            threads: 1,
            round,
            base,
            theta: &theta,
            seed,
            data_ids: &data_ids,
            record: true,
        };
        let trained = train_round_recorded(&job, &mut local).unwrap();
        let kept = trained.kept.expect("a recorded round keeps its start");
        // The record binds to the round as every verifier agreed it.
        let record = ReplayRecord::decode(&dir.read_blob(&trained.replay).unwrap()).unwrap();
        let expect = RecordExpectation {
            run: run.run_id,
            round,
            trainer: peer,
            base_model_hash: base,
            data_ids: data_ids.clone(),
            update_cid: trained.cid,
            inner_steps: INNER_STEPS,
        };
        assert_eq!(record.check(&expect), Ok(()));
        assert_eq!(record.leaves, kept.leaves);
        let check = SpotCheck {
            peer,
            round,
            verifier: PeerId([1; 32]),
            first_step: 0,
            end_step: INNER_STEPS,
        };
        // Re-created from the kept start, the drawn states hash to the committed leaves.
        serve_states(&work, &dir, 1, (run.run_id, round, peer), &kept, &check).unwrap();
        let outcome = spot_check_offline(&work, &dir, &record, &check, seed);
        match (attack, outcome) {
            (None, ReplayOutcome::Honest { steps_replayed }) => assert!(steps_replayed >= 1),
            (Some(_), ReplayOutcome::Fraud(proof)) => {
                // Its first step already used the wrong shards; a fresh executor confirms the proof.
                assert_eq!(proof.body.step, 0);
                let finding = proof.check(&mut WorkloadStep::new(&work, 1)).unwrap();
                assert_eq!(finding.peer, peer);
                assert!(finding.exact);
            }
            (attack, outcome) => panic!("{attack:?}: {outcome:?}"),
        }
    }
}
