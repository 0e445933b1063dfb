//! Replay spot checks: re-execute a sampled range of a trainer's inner steps and, on a mismatch, bisect to the first
//! wrong step and produce a fraud proof.
//!
//! Who checks what is verifiable randomness: x = BLAKE3("…/spot-check/v1" ‖ round seed ‖ round ‖ peer). The
//! (peer, round) is drawn when the first 8 bytes of x, as a little-endian u64, fall below p · 2⁶⁴; the verifier is
//! the one with the lowest BLAKE3(x ‖ verifier id) among the run's verifiers other than the peer; the replayed range
//! starts at (next 8 bytes of x) mod (H − len + 1). Anyone can recompute all three.
//!
//! The session is sans-IO: it asks the caller for the trainer's committed states (`ReplayAction::Fetch`) and gets
//! them back (`ReplayInput`); re-execution goes through `StepExecutor`, which node implements on the tch trainer
//! (the tests and the `verify-fraud-proof` bin use `standin::QuadraticStep`).
//!
//! Bisection keeps the invariant "replaying from the trainer's state `lo` disagrees with its state `hi`" and halves
//! [lo, hi] until hi = lo + 1; that single step is the proof. Agreement is hash equality when the verifier's
//! reproducibility class equals the trainer's, else relative L2 distance within `cross_class_tolerance`.

use types::limits::verify as limits;
use types::{Hash32, PeerId, RoundNumber, RunId};

use crate::commitment::{Commitment, ReproClass, SignedCommitment};
use crate::fraud::{cross_class_tolerance, FraudProof, FraudProofBody};
use crate::keys::NodeKey;
use crate::merkle::{path_valid, MerklePath};
use crate::score::HashStream;

/// Everything a step function needs besides the state: which round, which peer, which data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepContext {
    pub run: RunId,
    pub round: RoundNumber,
    pub round_seed: Hash32,
    pub peer: PeerId,
    pub data_ids: Vec<u64>,
    /// The step executed: state `step` → state `step + 1`.
    pub step: u32,
}

impl StepContext {
    pub fn of_commitment(c: &Commitment, round_seed: Hash32, step: u32) -> StepContext {
        StepContext {
            run: c.run,
            round: c.round,
            round_seed,
            peer: c.peer,
            data_ids: c.data_ids.clone(),
            step,
        }
    }
}

/// One inner training step on canonical state bytes. Must be a pure function of (context, state) on a given
/// reproducibility class. Node implements it on `model::Trainer` (state = params ‖ optimizer state ‖ step, batch
/// from `data::batch::sample_batch` seeded by the context).
pub trait StepExecutor {
    fn execute(&mut self, ctx: &StepContext, state: &[u8]) -> Result<Vec<u8>, ExecError>;
    /// Relative L2 distance between two states, for comparison across reproducibility classes.
    fn distance(&self, a: &[u8], b: &[u8]) -> Result<f64, ExecError>;
    /// This executor's reproducibility class.
    fn repro_class(&self) -> ReproClass;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("step execution failed: {0}")]
pub struct ExecError(pub String);

/// A drawn spot check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpotCheck {
    pub peer: PeerId,
    pub round: RoundNumber,
    pub verifier: PeerId,
    /// Replayed states: from `first_step` to `end_step` (end > first).
    pub first_step: u32,
    pub end_step: u32,
}

/// Draws whether (peer, round) is spot-checked, by whom and on which `steps` consecutive steps (at most H; the run
/// fixes it, `SPOT_CHECK_STEPS` by default). `None` when not drawn, when H or `steps` is 0 or when no verifier
/// other than the peer exists.
///
/// `round_seed` must be a value the trainer could not know before it committed (a beacon drawn after the commit
/// deadline, or a hash over the round's commitments): a trainer that knows its checked steps in advance trains
/// honestly on those and cheats on the rest.
pub fn draw_spot_check(
    round_seed: &Hash32,
    round: RoundNumber,
    peer: &PeerId,
    inner_steps: u32,
    verifiers: &[PeerId],
    probability_ppm: u32,
    steps: u32,
) -> Option<SpotCheck> {
    let mut x = HashStream::new(&[
        b"commonweight/verify/spot-check/v1",
        &round_seed.0,
        &round.0.to_le_bytes(),
        &peer.0,
    ]);
    let draw = x.next_u64();
    let threshold = (probability_ppm.min(1_000_000) as u128 * (1u128 << 64)) / 1_000_000;
    if draw as u128 >= threshold || inner_steps == 0 || steps == 0 {
        return None;
    }
    let start_word = x.next_u64();
    let len = steps.min(inner_steps);
    let first_step = (start_word % (inner_steps - len + 1) as u64) as u32;
    let rank = |v: &PeerId| {
        Hash32::of(&[&draw.to_le_bytes()[..], &start_word.to_le_bytes(), &v.0].concat())
    };
    let verifier = verifiers
        .iter()
        .filter(|v| *v != peer)
        .min_by_key(|v| (rank(v), **v))?;
    Some(SpotCheck {
        peer: *peer,
        round,
        verifier: *verifier,
        first_step,
        end_step: first_step + len,
    })
}

/// What the session asks of the caller, or its result.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayAction {
    /// Fetch the trainer's committed state after `step` inner steps, with its Merkle path.
    Fetch {
        peer: PeerId,
        round: RoundNumber,
        step: u32,
    },
    Finished(ReplayOutcome),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReplayOutcome {
    /// The replayed range agrees with the commitment.
    Honest { steps_replayed: u64 },
    /// A wrong step, proven.
    Fraud(Box<FraudProof>),
    /// The trainer did not serve (or served a state not matching its commitment for) `step`.
    Withheld { step: u32 },
}

/// What the caller feeds back.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayInput {
    Fetched {
        step: u32,
        state: Vec<u8>,
        path: MerklePath,
    },
    FetchFailed {
        step: u32,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplayError {
    #[error("got state {got}, waiting for {waiting}")]
    UnexpectedStep { got: u32, waiting: u32 },
    #[error("the session is finished")]
    Finished,
    #[error("spot check range {first}..{end} is outside the committed {inner_steps} steps")]
    BadRange {
        first: u32,
        end: u32,
        inner_steps: u32,
    },
    #[error(transparent)]
    Exec(#[from] ExecError),
}

#[derive(Debug, Clone)]
struct Known {
    step: u32,
    state: Vec<u8>,
    /// `Hash32::of(state)`, the step-tree leaf (hashed once: states are large).
    leaf: Hash32,
    path: MerklePath,
}

/// One spot check in progress.
pub struct ReplaySession {
    commitment: SignedCommitment,
    round_seed: Hash32,
    end_step: u32,
    lo: Option<Known>,
    hi: Option<Known>,
    waiting: Option<u32>,
    steps_replayed: u64,
    fetches: usize,
    finished: bool,
}

impl ReplaySession {
    /// Starts the check; the first action fetches the start of the range.
    pub fn start(
        check: &SpotCheck,
        commitment: SignedCommitment,
        round_seed: Hash32,
    ) -> Result<(ReplaySession, Vec<ReplayAction>), ReplayError> {
        let inner_steps = commitment.commitment.inner_steps;
        if check.first_step >= check.end_step || check.end_step > inner_steps {
            return Err(ReplayError::BadRange {
                first: check.first_step,
                end: check.end_step,
                inner_steps,
            });
        }
        let mut session = ReplaySession {
            commitment,
            round_seed,
            end_step: check.end_step,
            lo: None,
            hi: None,
            waiting: None,
            steps_replayed: 0,
            fetches: 0,
            finished: false,
        };
        let action = session.fetch(check.first_step);
        Ok((session, vec![action]))
    }

    fn fetch(&mut self, step: u32) -> ReplayAction {
        self.waiting = Some(step);
        self.fetches += 1;
        let c = &self.commitment.commitment;
        ReplayAction::Fetch {
            peer: c.peer,
            round: c.round,
            step,
        }
    }

    fn finish(&mut self, outcome: ReplayOutcome) -> Vec<ReplayAction> {
        self.finished = true;
        self.waiting = None;
        vec![ReplayAction::Finished(outcome)]
    }

    /// Feeds one fetch result in; re-executes with `executor`; signs a proof with `key` on fraud.
    pub fn handle(
        &mut self,
        input: ReplayInput,
        executor: &mut dyn StepExecutor,
        key: &NodeKey,
    ) -> Result<Vec<ReplayAction>, ReplayError> {
        if self.finished {
            return Err(ReplayError::Finished);
        }
        let waiting = self.waiting.expect("a live session waits for a fetch");
        let (step, state, path) = match input {
            ReplayInput::FetchFailed { step } if step == waiting => {
                return Ok(self.finish(ReplayOutcome::Withheld { step }));
            }
            ReplayInput::Fetched { step, state, path } if step == waiting => (step, state, path),
            ReplayInput::FetchFailed { step } | ReplayInput::Fetched { step, .. } => {
                return Err(ReplayError::UnexpectedStep { got: step, waiting });
            }
        };
        let c = &self.commitment.commitment;
        if state.len() > limits::FRAUD_PROOF_STATE_BYTES_MAX {
            return Ok(self.finish(ReplayOutcome::Withheld { step }));
        }
        let leaf = Hash32::of(&state);
        if !path_valid(
            &c.step_root,
            c.inner_steps as u64 + 1,
            step as u64,
            &leaf,
            &path,
        ) {
            return Ok(self.finish(ReplayOutcome::Withheld { step }));
        }
        let known = Known {
            step,
            state,
            leaf,
            path,
        };
        if self.lo.is_none() {
            self.lo = Some(known);
            let end = self.end_step;
            return Ok(vec![self.fetch(end)]);
        }
        self.bisect(known, executor, key)
    }

    /// `fetched` is the trainer's state at the step we asked for: either the range end (first time) or a midpoint.
    fn bisect(
        &mut self,
        fetched: Known,
        executor: &mut dyn StepExecutor,
        key: &NodeKey,
    ) -> Result<Vec<ReplayAction>, ReplayError> {
        let lo = self.lo.clone().expect("lo is known before bisection");
        let (agrees, _) = self.replay_agrees(executor, &lo, &fetched)?;
        match (&self.hi, agrees) {
            (None, true) => {
                let steps = self.steps_replayed;
                return Ok(self.finish(ReplayOutcome::Honest {
                    steps_replayed: steps,
                }));
            }
            (None, false) | (Some(_), false) => self.hi = Some(fetched),
            (Some(_), true) => self.lo = Some(fetched),
        }
        let lo = self.lo.clone().expect("lo");
        let hi = self.hi.clone().expect("hi");
        if hi.step == lo.step + 1 {
            // The last replay may have been over a longer interval; the proof is about this single step.
            let (single_agrees, single) = self.replay_agrees(executor, &lo, &hi)?;
            if single_agrees {
                let steps = self.steps_replayed;
                return Ok(self.finish(ReplayOutcome::Honest {
                    steps_replayed: steps,
                }));
            }
            let proof = self.proof(lo, hi, &single, executor.repro_class(), key);
            return Ok(self.finish(ReplayOutcome::Fraud(Box::new(proof))));
        }
        if self.fetches >= limits::REPLAY_FETCHES_MAX {
            // Unreachable for ranges below 2^62 steps; kept as a bound on peer-driven work.
            let step = hi.step;
            return Ok(self.finish(ReplayOutcome::Withheld { step }));
        }
        let mid = lo.step + (hi.step - lo.step) / 2;
        Ok(vec![self.fetch(mid)])
    }

    /// Replays from `from` up to `to.step` and compares with `to`'s state.
    fn replay_agrees(
        &mut self,
        executor: &mut dyn StepExecutor,
        from: &Known,
        to: &Known,
    ) -> Result<(bool, Vec<u8>), ReplayError> {
        let c = &self.commitment.commitment;
        let mut state = from.state.clone();
        for step in from.step..to.step {
            let ctx = StepContext::of_commitment(c, self.round_seed, step);
            state = executor.execute(&ctx, &state)?;
            self.steps_replayed += 1;
        }
        let agrees = if executor.repro_class() == c.repro {
            Hash32::of(&state) == to.leaf
        } else {
            executor.distance(&state, &to.state)? <= cross_class_tolerance(to.step - from.step)
        };
        Ok((agrees, state))
    }

    fn proof(
        &self,
        lo: Known,
        hi: Known,
        replayed: &[u8],
        repro: ReproClass,
        key: &NodeKey,
    ) -> FraudProof {
        FraudProofBody {
            commitment: self.commitment.clone(),
            round_seed: self.round_seed,
            step: lo.step,
            state_before: lo.state,
            path_before: lo.path,
            state_after: hi.state,
            path_after: hi.path,
            verifier: key.peer_id(),
            verifier_repro: repro,
            replayed_after_hash: Hash32::of(replayed),
        }
        .sign(key)
    }
}
