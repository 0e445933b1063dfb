//! The shell's side of replay spot checks (`spot_check`), off the event loop: a drawn trainer re-creates and
//! serves the states of its drawn range, and a drawn verifier fetches the record and states and replays them.

use std::sync::Arc;
use std::time::Duration;

use net::NetClient;
use types::limits::node as limits;
use types::limits::verify as verify_limits;
use types::{Hash32, PeerId, RoundNumber, RunId};
use verify::replay::{ReplayAction, ReplayInput, ReplayOutcome, ReplaySession, SpotCheck};
use verify::{NodeKey, StepContext, StepExecutor};

use crate::persist::RunDir;
use crate::roles::SpotOutcome;
use crate::spot_check::{KeptStart, RecordExpectation, ReplayRecord, SpotTarget};
use crate::verifier_model::WorkloadStep;
use crate::work::Workload;

/// Re-creates the trainer's states `check.first_step..=check.end_step` from its kept start state with the step
/// function verifiers run, and stores each as a blob named by its hash, which peers can then fetch. A state that
/// does not hash to the committed leaf is not stored (and logged): the verifier then finds it withheld.
pub fn serve_states(
    work: &Workload,
    dir: &RunDir,
    threads: usize,
    (run, round, me): (RunId, RoundNumber, PeerId),
    kept: &KeptStart,
    check: &SpotCheck,
) -> Result<(), String> {
    let mut executor = WorkloadStep::new(work, threads);
    let mut ctx = StepContext {
        run,
        round,
        round_seed: kept.seed,
        peer: me,
        data_ids: kept.trained_ids.iter().map(|&d| u64::from(d)).collect(),
        step: 0,
    };
    let mut state = kept.start.clone();
    for step in 0..=check.end_step {
        if step >= check.first_step {
            let leaf = Hash32::of(&state);
            if kept.leaves.get(step as usize) != Some(&leaf) {
                return Err(format!(
                    "re-created state {step} does not match its committed hash"
                ));
            }
            dir.put_blob(&leaf, &state).map_err(|e| e.to_string())?;
        }
        if step < check.end_step {
            ctx.step = step;
            state = executor.execute(&ctx, &state).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Everything a drawn verifier's check needs.
pub struct CheckJob {
    pub net: NetClient,
    pub dir: RunDir,
    pub work: Arc<Workload>,
    pub key: Arc<NodeKey>,
    pub threads: usize,
    pub check: SpotCheck,
    pub target: SpotTarget,
    pub run: RunId,
    /// The round seed the trainer's batches came from.
    pub train_seed: Hash32,
}

/// Runs one spot check to its end: fetches the trainer's record, checks it against the agreed round, and drives
/// `verify::ReplaySession` (re-execution off the async threads). A fraud proof is written to
/// `RUN_DIR/fraud-proofs/<hash>.bin`.
pub async fn run_check(job: CheckJob) -> SpotOutcome {
    let trainer = job.check.peer;
    let round = job.check.round;
    let Some(bytes) =
        fetch_retrying(&job.net, job.target.replay, trainer, record_bytes_max()).await
    else {
        return SpotOutcome::Withheld { step: None };
    };
    let expect = RecordExpectation {
        run: job.run,
        round,
        trainer,
        base_model_hash: job.target.base_model_hash,
        data_ids: job.target.data_ids.clone(),
        update_cid: job.target.update_cid,
        inner_steps: job.work.inner_steps(),
    };
    let record = match ReplayRecord::decode(&bytes).and_then(|r| r.check(&expect).map(|()| r)) {
        Ok(record) => record,
        Err(e) => {
            tracing::warn!(round = round.0, %trainer, %e, "bad replay record");
            return SpotOutcome::Withheld { step: None };
        }
    };
    let (session, actions) =
        match ReplaySession::start(&job.check, record.commitment.clone(), job.train_seed) {
            Ok(started) => started,
            Err(e) => {
                tracing::warn!(round = round.0, %trainer, %e, "spot check did not start");
                return SpotOutcome::Failed;
            }
        };
    drive(&job, &record.leaves, session, actions).await
}

async fn drive(
    job: &CheckJob,
    leaves: &[Hash32],
    mut session: ReplaySession,
    mut actions: Vec<ReplayAction>,
) -> SpotOutcome {
    // Each round of the loop answers the session's one pending fetch (it asks for one state at a time).
    for _ in 0..verify_limits::REPLAY_FETCHES_MAX {
        let step = match actions.pop() {
            Some(ReplayAction::Fetch { step, .. }) => step,
            Some(ReplayAction::Finished(outcome)) => return finish(job, outcome),
            None => return SpotOutcome::Failed,
        };
        let input = match leaves.get(step as usize) {
            Some(&leaf) => {
                match fetch_retrying(&job.net, leaf, job.check.peer, state_bytes_max()).await {
                    Some(state) => ReplayInput::Fetched {
                        step,
                        state,
                        path: verify::merkle::step_path(leaves, step as usize),
                    },
                    None => ReplayInput::FetchFailed { step },
                }
            }
            None => ReplayInput::FetchFailed { step },
        };
        let work = Arc::clone(&job.work);
        let key = Arc::clone(&job.key);
        let threads = job.threads;
        let handled = tokio::task::spawn_blocking(move || {
            let mut executor = WorkloadStep::new(&work, threads);
            let result = session.handle(input, &mut executor, &key);
            (session, result)
        })
        .await;
        match handled {
            Ok((back, Ok(next))) => {
                session = back;
                actions = next;
            }
            Ok((_, Err(e))) => {
                tracing::warn!(%e, "spot check failed here");
                return SpotOutcome::Failed;
            }
            Err(e) => {
                tracing::warn!(%e, "spot check task failed");
                return SpotOutcome::Failed;
            }
        }
    }
    SpotOutcome::Failed
}

fn finish(job: &CheckJob, outcome: ReplayOutcome) -> SpotOutcome {
    match outcome {
        ReplayOutcome::Honest { steps_replayed } => SpotOutcome::Honest { steps_replayed },
        ReplayOutcome::Withheld { step } => SpotOutcome::Withheld { step: Some(step) },
        ReplayOutcome::Fraud(proof) => {
            let (cid, bytes) = keep_proof(&job.dir, &proof);
            tracing::warn!(
                round = job.check.round.0,
                trainer = %job.check.peer,
                step = proof.body.step,
                proof = %cid,
                "fraud proven"
            );
            SpotOutcome::Fraud { proof: cid, bytes }
        }
    }
}

/// Stores a fraud proof as a blob (served to peers that check it) and as `RUN_DIR/fraud-proofs/<cid>.bin`;
/// returns its CID and size.
fn keep_proof(dir: &RunDir, proof: &verify::FraudProof) -> (Hash32, u64) {
    let encoded = proof.encode();
    let cid = Hash32::of(&encoded);
    let folder = dir.root.join("fraud-proofs");
    let written = dir
        .put_blob(&cid, &encoded)
        .map_err(|e| e.to_string())
        .and_then(|()| std::fs::create_dir_all(&folder).map_err(|e| e.to_string()))
        .and_then(|()| {
            std::fs::write(folder.join(format!("{}.bin", cid.to_hex())), &encoded)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = written {
        tracing::error!(%e, "storing a fraud proof failed");
    }
    (cid, encoded.len() as u64)
}

/// Fetches a peer's fraud proof about `trainer` from `provider` and checks it: this run, this trainer, and its one
/// re-executed step (`verify::FraudProof::check`). A proof that checks is kept and served like one made here.
pub async fn check_peer_proof(
    net: &NetClient,
    dir: &RunDir,
    work: Arc<Workload>,
    threads: usize,
    (trainer, proof, bytes, provider): (PeerId, Hash32, u64, PeerId),
) -> bool {
    let max = bytes.min(verify_limits::FRAUD_PROOF_BYTES_MAX as u64);
    let Some(encoded) = crate::run_shell::fetch_checked(net, proof, vec![provider], max).await
    else {
        return false;
    };
    let Ok(decoded) = verify::FraudProof::decode(&encoded) else {
        return false;
    };
    let c = &decoded.body.commitment.commitment;
    if c.run != work.run_id() || c.peer != trainer {
        return false;
    }
    let checked = tokio::task::spawn_blocking(move || {
        let mut executor = WorkloadStep::new(&work, threads);
        decoded.check(&mut executor).map(|_| decoded)
    })
    .await;
    match checked {
        Ok(Ok(decoded)) => {
            keep_proof(dir, &decoded);
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(%trainer, %e, "a peer's fraud proof does not check");
            false
        }
        Err(_) => false,
    }
}

fn record_bytes_max() -> u64 {
    (verify_limits::COMMITMENT_BYTES_MAX + 16 + 32 * (verify_limits::INNER_STEPS_MAX as usize + 1))
        as u64
}

fn state_bytes_max() -> u64 {
    verify_limits::FRAUD_PROOF_STATE_BYTES_MAX as u64
}

/// Fetches blob `cid` from `trainer`, trying `SPOT_CHECK_FETCH_ATTEMPTS_MAX` times.
async fn fetch_retrying(
    net: &NetClient,
    cid: Hash32,
    trainer: PeerId,
    max: u64,
) -> Option<Vec<u8>> {
    for attempt in 0..limits::SPOT_CHECK_FETCH_ATTEMPTS_MAX {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(limits::SPOT_CHECK_FETCH_RETRY_MS)).await;
        }
        if let Some(bytes) = crate::run_shell::fetch_checked(net, cid, vec![trainer], max).await {
            return Some(bytes);
        }
    }
    None
}

/// One round a trainer trained: its update blob's CID and size, its losses, and (spot checks on) its replay
/// record's CID with the start state it keeps.
pub struct TrainedRound {
    pub cid: Hash32,
    pub bytes: u64,
    pub mean_loss: f32,
    pub last_loss: f32,
    pub replay: Hash32,
    pub kept: Option<KeptStart>,
}

/// What a training round is bound to.
pub struct TrainJob<'a> {
    pub work: &'a Workload,
    pub dir: &'a RunDir,
    pub key: &'a NodeKey,
    pub threads: usize,
    pub round: RoundNumber,
    pub base: Hash32,
    pub theta: &'a [f32],
    pub seed: Hash32,
    pub data_ids: &'a [u32],
    /// Whether the run spot-checks (then every inner step's state is hashed and the record stored).
    pub record: bool,
}

/// Trains one round (`Workload::train_round_observed`) and stores the update blob; with `record`, hashes the
/// state before the first step and after each and stores the signed replay record.
pub fn train_round_recorded(
    job: &TrainJob<'_>,
    local: &mut crate::work::LocalTrainer,
) -> Result<TrainedRound, crate::work::WorkError> {
    let store_err =
        |e: crate::persist::PersistError| crate::work::WorkError::Aggregate(e.to_string());
    let shards = job.work.shard_count();
    let trained_ids = match &local.attacker {
        Some(attacker) => attacker.trained_ids(job.data_ids, shards),
        None => job.data_ids.to_vec(),
    };
    let mut leaves = Vec::new();
    let mut start = None;
    let mut update = job.work.train_round_observed(
        &mut local.trainer,
        &mut local.feedback,
        job.round,
        job.theta,
        job.seed,
        &trained_ids,
        |trainer| {
            if job.record {
                let state = crate::verifier_model::train_state_bytes(trainer);
                leaves.push(Hash32::of(&state));
                start.get_or_insert(state);
            }
        },
    )?;
    if let Some(attacker) = &mut local.attacker {
        update.blob = attacker.tamper(job.work, &update.blob)?;
    }
    let cid = Hash32::of(&update.blob);
    job.dir.put_blob(&cid, &update.blob).map_err(store_err)?;
    let bytes = update.blob.len() as u64;
    let (replay, kept) = match start {
        Some(start) => {
            let record = ReplayRecord {
                commitment: verify::Commitment {
                    run: job.work.run_id(),
                    round: job.round,
                    peer: job.key.peer_id(),
                    base_model_hash: job.base,
                    // The assignment, whatever it trained on: the commitment is what verifiers hold it to.
                    data_ids: job.data_ids.iter().map(|&d| u64::from(d)).collect(),
                    update_cid: cid,
                    update_bytes: bytes,
                    codec: job.work.codec_id(),
                    claimed_loss: update.last_loss,
                    repro: crate::verifier_model::cpu_repro_class(job.threads),
                    inner_steps: job.work.inner_steps(),
                    step_root: verify::merkle::step_root(&leaves),
                }
                .sign(job.key),
                leaves: leaves.clone(),
            };
            let encoded = record.encode();
            let replay = Hash32::of(&encoded);
            job.dir.put_blob(&replay, &encoded).map_err(store_err)?;
            let kept = KeptStart {
                start,
                trained_ids,
                seed: job.seed,
                leaves,
            };
            (replay, Some(kept))
        }
        None => (Hash32::ZERO, None),
    };
    Ok(TrainedRound {
        cid,
        bytes,
        mean_loss: update.mean_loss,
        last_loss: update.last_loss,
        replay,
        kept,
    })
}
