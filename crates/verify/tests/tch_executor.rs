//! A tch-backed `StepExecutor` over `model::Trainer`: replay spot checks and fraud proofs on a real (very small)
//! Llama, bit-exact within a reproducibility class and by tolerance across thread counts.
//!
//! State bytes: params ‖ AdamW exp_avg ‖ exp_avg_sq (f32 LE, layout order) ‖ optimizer step (u64 LE). The batch of
//! step k is drawn from BLAKE3(round seed ‖ peer ‖ data ids ‖ k) over the byte vocabulary: a stand-in for
//! `data::batch::sample_batch` on the peer's assigned shard, which node will use. Everything runs in one #[test]
//! because libtorch's thread count is process-wide.

use model::{ModelConfig, OptimizerState, Preset, TrainConfig, Trainer};
use types::{Hash32, RoundNumber, RunId};
use verify::merkle::StepLog;
use verify::{
    Commitment, ExecError, FraudCheckError, FraudProof, NodeKey, ReplayAction, ReplayInput,
    ReplayOutcome, ReplaySession, ReproClass, SignedCommitment, SpotCheck, StepContext,
    StepExecutor,
};

const STEPS: u32 = 6;

fn model_config() -> ModelConfig {
    ModelConfig {
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        max_position_embeddings: 32,
        ..Preset::Tiny.model_config(256)
    }
}

fn train_config() -> TrainConfig {
    let mut train = Preset::Tiny.train_config(STEPS as u64);
    train.batch_size = 2;
    train.seq_len = 16;
    train.warmup_steps = 2;
    train
}

fn isa() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "x86_64-avx512".into();
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return "x86_64-avx2".into();
        }
    }
    std::env::consts::ARCH.into()
}

fn class(threads: usize) -> ReproClass {
    ReproClass {
        backend: "libtorch-tch0.24-cpu".into(),
        isa: isa(),
        threads: threads as u16,
    }
}

fn tokens(ctx: &StepContext, count: usize) -> Vec<u32> {
    let mut h = blake3::Hasher::new();
    h.update(b"verify-tch-test-batch");
    h.update(&ctx.round_seed.0);
    h.update(&ctx.peer.0);
    for id in &ctx.data_ids {
        h.update(&id.to_le_bytes());
    }
    h.update(&ctx.step.to_le_bytes());
    let mut reader = h.finalize_xof();
    let mut bytes = vec![0u8; count];
    reader.fill(&mut bytes);
    bytes.into_iter().map(u32::from).collect()
}

fn encode(params: &[f32], opt: &OptimizerState) -> Vec<u8> {
    let mut out: Vec<u8> = params
        .iter()
        .chain(&opt.exp_avg)
        .chain(&opt.exp_avg_sq)
        .flat_map(|v| v.to_le_bytes())
        .collect();
    out.extend_from_slice(&opt.step.to_le_bytes());
    out
}

fn decode(state: &[u8], n: usize) -> Result<(Vec<f32>, OptimizerState), ExecError> {
    if state.len() != 12 * n + 8 {
        return Err(ExecError(format!(
            "state of {} bytes, want {}",
            state.len(),
            12 * n + 8
        )));
    }
    let floats: Vec<f32> = state[..12 * n]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let step = u64::from_le_bytes(state[12 * n..].try_into().unwrap());
    let opt = OptimizerState {
        step,
        exp_avg: floats[n..2 * n].to_vec(),
        exp_avg_sq: floats[2 * n..].to_vec(),
    };
    Ok((floats[..n].to_vec(), opt))
}

/// The tch-backed executor: a fresh `Trainer` per step, restored from the state bytes.
struct TchStep {
    threads: usize,
}

impl TchStep {
    fn param_count() -> usize {
        model::param_count(&model_config())
    }
}

impl StepExecutor for TchStep {
    fn execute(&mut self, ctx: &StepContext, state: &[u8]) -> Result<Vec<u8>, ExecError> {
        let (params, opt) = decode(state, TchStep::param_count())?;
        let err = |e: model::ModelError| ExecError(e.to_string());
        let mut trainer =
            Trainer::with_params(model_config(), train_config(), &params, self.threads)
                .map_err(err)?;
        trainer.set_optimizer_state(&opt).map_err(err)?;
        trainer
            .train_step(&tokens(ctx, train_config().tokens_per_step()))
            .map_err(err)?;
        Ok(encode(&trainer.params(), &trainer.optimizer_state()))
    }

    fn distance(&self, a: &[u8], b: &[u8]) -> Result<f64, ExecError> {
        let n = TchStep::param_count();
        let (pa, _) = decode(a, n)?;
        let (pb, _) = decode(b, n)?;
        let diff: f64 = pa
            .iter()
            .zip(&pb)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum();
        let norm: f64 = pb.iter().map(|y| (*y as f64).powi(2)).sum();
        Ok(diff.sqrt() / norm.sqrt().max(1e-30))
    }

    fn repro_class(&self) -> ReproClass {
        class(self.threads)
    }
}

struct TrainerRun {
    states: Vec<Vec<u8>>,
    log: StepLog,
    commitment: SignedCommitment,
    round_seed: Hash32,
}

/// A trainer that keeps one `Trainer` across its steps (as a real one does), optionally cheating after `cheat_at`.
fn train(cheat_at: Option<u32>) -> TrainerRun {
    let key = NodeKey::from_secret([31; 32]);
    let round_seed = Hash32::of(b"tch round");
    let ctx = StepContext {
        run: RunId(Hash32::of(b"tch run")),
        round: RoundNumber(1),
        round_seed,
        peer: key.peer_id(),
        data_ids: vec![4, 8],
        step: 0,
    };
    let mut trainer = Trainer::new(model_config(), train_config(), 7, 1).unwrap();
    let base_model_hash = Hash32::of_f32s(&trainer.params());
    let mut log = StepLog::default();
    let mut states = vec![encode(&trainer.params(), &trainer.optimizer_state())];
    log.record(&states[0]);
    for step in 0..STEPS {
        trainer
            .train_step(&tokens(
                &StepContext {
                    step,
                    ..ctx.clone()
                },
                train_config().tokens_per_step(),
            ))
            .unwrap();
        if cheat_at == Some(step) {
            let mut params = trainer.params();
            params[0] += 0.05;
            trainer.set_params(&params).unwrap();
        }
        let state = encode(&trainer.params(), &trainer.optimizer_state());
        log.record(&state);
        states.push(state);
    }
    let commitment = Commitment {
        run: ctx.run,
        round: ctx.round,
        peer: ctx.peer,
        base_model_hash,
        data_ids: ctx.data_ids.clone(),
        update_cid: Hash32::of(b"tch update"),
        update_bytes: 0,
        codec: 0,
        claimed_loss: 5.0,
        repro: class(1),
        inner_steps: STEPS,
        step_root: log.root(),
    }
    .sign(&key);
    TrainerRun {
        states,
        log,
        commitment,
        round_seed,
    }
}

fn spot_check(run: &TrainerRun, executor: &mut TchStep) -> ReplayOutcome {
    let verifier = NodeKey::from_secret([32; 32]);
    let c = &run.commitment.commitment;
    let check = SpotCheck {
        peer: c.peer,
        round: c.round,
        verifier: verifier.peer_id(),
        first_step: 0,
        end_step: STEPS,
    };
    let (mut session, mut actions) =
        ReplaySession::start(&check, run.commitment.clone(), run.round_seed).unwrap();
    loop {
        match actions.pop().unwrap() {
            ReplayAction::Fetch { step, .. } => {
                let input = ReplayInput::Fetched {
                    step,
                    state: run.states[step as usize].clone(),
                    path: run.log.path(step as usize),
                };
                actions = session.handle(input, executor, &verifier).unwrap();
            }
            ReplayAction::Finished(outcome) => return outcome,
        }
    }
}

#[test]
fn tch_trainer_replay_and_fraud_proofs() {
    // A persistent trainer and step-by-step replay from state bytes agree bit for bit (same class).
    let honest = train(None);
    let mut same = TchStep { threads: 1 };
    for step in 0..STEPS {
        let ctx =
            StepContext::of_commitment(&honest.commitment.commitment, honest.round_seed, step);
        let replayed = same.execute(&ctx, &honest.states[step as usize]).unwrap();
        assert!(
            replayed == honest.states[step as usize + 1],
            "step {step} replays bit-exactly"
        );
    }
    assert_eq!(
        spot_check(&honest, &mut same),
        ReplayOutcome::Honest {
            steps_replayed: STEPS as u64
        }
    );

    // A cheat at step 3 is bisected to step 3; the proof survives the wire and checks in a fresh executor.
    let cheater = train(Some(3));
    let ReplayOutcome::Fraud(proof) = spot_check(&cheater, &mut same) else {
        panic!("cheat not found")
    };
    assert_eq!(proof.body.step, 3);
    let decoded = FraudProof::decode(&proof.encode()).unwrap();
    let finding = decoded.check(&mut TchStep { threads: 1 }).unwrap();
    assert!(finding.exact);
    let mut tampered = decoded.clone();
    tampered.body.state_before[100] ^= 1;
    assert_eq!(
        tampered.check(&mut TchStep { threads: 1 }),
        Err(FraudCheckError::BadVerifierSignature)
    );

    // Another thread count is another reproducibility class: checked by tolerance, same conclusions.
    let mut other = TchStep { threads: 2 };
    assert!(matches!(
        spot_check(&honest, &mut other),
        ReplayOutcome::Honest { .. }
    ));
    let finding = decoded.check(&mut other).unwrap();
    assert!(!finding.exact);
}
