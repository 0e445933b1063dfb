//! Replay spot checks: verifiable selection, the sans-IO session (honest, cheating, cross-class, withheld), with the
//! stand-in step function.

use types::limits::verify::SPOT_CHECK_STEPS;
use types::{Hash32, PeerId, RoundNumber, RunId};
use verify::replay::SpotCheck;
use verify::standin::{self, QuadraticStep};
use verify::{
    draw_spot_check, Commitment, NodeKey, ReplayAction, ReplayError, ReplayInput, ReplayOutcome,
    ReplaySession, SignedCommitment, StepContext,
};

const STEPS: u32 = 12;

fn setup(cheat: Option<u32>) -> (SignedCommitment, standin::StandinRun, Hash32) {
    let trainer = NodeKey::from_secret([1; 32]);
    let round_seed = Hash32::of(b"replay test");
    let ctx = StepContext {
        run: RunId(Hash32::of(b"run")),
        round: RoundNumber(2),
        round_seed,
        peer: trainer.peer_id(),
        data_ids: vec![1, 2, 3],
        step: 0,
    };
    let run = standin::train(&ctx, standin::initial_state(32, &round_seed), STEPS, cheat).unwrap();
    let commitment = Commitment {
        run: ctx.run,
        round: ctx.round,
        peer: ctx.peer,
        base_model_hash: Hash32::of(b"base"),
        data_ids: ctx.data_ids.clone(),
        update_cid: Hash32::of(b"update"),
        update_bytes: 128,
        codec: 0,
        claimed_loss: 1.0,
        repro: standin::standin_class(),
        inner_steps: STEPS,
        step_root: run.log.root(),
    }
    .sign(&trainer);
    (commitment, run, round_seed)
}

fn check_range(
    first_step: u32,
    end_step: u32,
    commitment: &SignedCommitment,
    verifier: &NodeKey,
) -> SpotCheck {
    SpotCheck {
        peer: commitment.commitment.peer,
        round: commitment.commitment.round,
        verifier: verifier.peer_id(),
        first_step,
        end_step,
    }
}

/// Drives a session to its end, serving states with `serve` (None = fetch fails).
fn drive(
    check: &SpotCheck,
    commitment: SignedCommitment,
    round_seed: Hash32,
    executor: &mut QuadraticStep,
    serve: &dyn Fn(u32) -> Option<ReplayInput>,
) -> (ReplayOutcome, usize) {
    let verifier = NodeKey::from_secret([2; 32]);
    let (mut session, mut actions) = ReplaySession::start(check, commitment, round_seed).unwrap();
    let mut fetches = 0;
    loop {
        match actions.pop().expect("a session always asks or answers") {
            ReplayAction::Fetch { step, .. } => {
                fetches += 1;
                let input = serve(step).unwrap_or(ReplayInput::FetchFailed { step });
                actions = session.handle(input, executor, &verifier).unwrap();
            }
            ReplayAction::Finished(outcome) => {
                assert_eq!(
                    session.handle(ReplayInput::FetchFailed { step: 0 }, executor, &verifier),
                    Err(ReplayError::Finished)
                );
                return (outcome, fetches);
            }
        }
    }
}

fn honest_server(run: &standin::StandinRun) -> impl Fn(u32) -> Option<ReplayInput> + '_ {
    move |step| {
        Some(ReplayInput::Fetched {
            step,
            state: run.states[step as usize].clone(),
            path: run.log.path(step as usize),
        })
    }
}

#[test]
fn spot_check_draw_is_verifiable_and_near_its_rate() {
    let verifiers: Vec<PeerId> = (0..5).map(|i| PeerId([i; 32])).collect();
    let seed = Hash32::of(b"seed");
    // (round, peer, H, verifiers, ppm, steps) -> the draw.
    let draw = |round: u64, peer: &PeerId, h: u32, vs: &[PeerId], ppm: u32, steps: u32| {
        draw_spot_check(&seed, RoundNumber(round), peer, h, vs, ppm, steps)
    };
    let mut drawn = 0;
    for p in 0..2000u32 {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&p.to_le_bytes());
        id[31] = 9;
        let peer = PeerId(id);
        let a = draw(4, &peer, 30, &verifiers, 100_000, SPOT_CHECK_STEPS);
        assert_eq!(
            a,
            draw(4, &peer, 30, &verifiers, 100_000, SPOT_CHECK_STEPS),
            "recomputable"
        );
        if let Some(c) = a {
            drawn += 1;
            assert!(c.end_step <= 30 && c.end_step - c.first_step == SPOT_CHECK_STEPS);
            assert!(verifiers.contains(&c.verifier));
        }
    }
    assert!(
        (150..=250).contains(&drawn),
        "10% of 2000 drawn, got {drawn}"
    );
    // The peer never checks itself.
    let only = [PeerId([7; 32])];
    for round in 0..200 {
        assert_eq!(
            draw(round, &only[0], 30, &only, 1_000_000, SPOT_CHECK_STEPS),
            None
        );
    }
    assert!(draw(0, &only[0], 30, &verifiers, 1_000_000, SPOT_CHECK_STEPS).is_some());
    // The run fixes the replayed length; one step is the cheapest check, no steps is none.
    let one = draw(0, &only[0], 30, &verifiers, 1_000_000, 1).unwrap();
    assert_eq!(one.end_step, one.first_step + 1);
    assert_eq!(draw(0, &only[0], 30, &verifiers, 1_000_000, 0), None);
    let capped = draw(0, &only[0], 3, &verifiers, 1_000_000, 8).unwrap();
    assert_eq!((capped.first_step, capped.end_step), (0, 3));
}

#[test]
fn honest_trainer_passes_any_range() {
    let (commitment, run, seed) = setup(None);
    let verifier = NodeKey::from_secret([2; 32]);
    for (first, end) in [(0, STEPS), (3, 7), (11, 12)] {
        let check = check_range(first, end, &commitment, &verifier);
        let (outcome, fetches) = drive(
            &check,
            commitment.clone(),
            seed,
            &mut QuadraticStep::new(),
            &honest_server(&run),
        );
        assert_eq!(
            outcome,
            ReplayOutcome::Honest {
                steps_replayed: (end - first) as u64
            }
        );
        assert_eq!(fetches, 2);
    }
}

#[test]
fn cheating_trainer_is_caught_by_bisection_in_log_fetches() {
    for cheat in [0, 5, 11] {
        let (commitment, run, seed) = setup(Some(cheat));
        let verifier = NodeKey::from_secret([2; 32]);
        let check = check_range(0, STEPS, &commitment, &verifier);
        let (outcome, fetches) = drive(
            &check,
            commitment,
            seed,
            &mut QuadraticStep::new(),
            &honest_server(&run),
        );
        let ReplayOutcome::Fraud(proof) = outcome else {
            panic!("cheat at {cheat} not found: {outcome:?}")
        };
        assert_eq!(proof.body.step, cheat);
        assert!(
            fetches <= 2 + 4,
            "bisection over 12 steps needs at most 4 more fetches, used {fetches}"
        );
        assert!(proof.check(&mut QuadraticStep::new()).unwrap().exact);
    }
}

#[test]
fn cross_class_verifier_uses_tolerance() {
    let mut other_class = QuadraticStep::new();
    other_class.repro.threads = 16;
    let (commitment, run, seed) = setup(None);
    let verifier = NodeKey::from_secret([2; 32]);
    let check = check_range(0, STEPS, &commitment, &verifier);
    let (outcome, _) = drive(
        &check,
        commitment,
        seed,
        &mut other_class.clone(),
        &honest_server(&run),
    );
    assert!(
        matches!(outcome, ReplayOutcome::Honest { .. }),
        "{outcome:?}"
    );
    let (commitment, run, seed) = setup(Some(6));
    let (outcome, _) = drive(
        &check,
        commitment,
        seed,
        &mut other_class.clone(),
        &honest_server(&run),
    );
    let ReplayOutcome::Fraud(proof) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(proof.body.step, 6);
    assert!(!proof.check(&mut other_class).unwrap().exact);
}

#[test]
fn withheld_or_wrong_states_end_the_check() {
    let (commitment, run, seed) = setup(None);
    let verifier = NodeKey::from_secret([2; 32]);
    let check = check_range(2, 6, &commitment, &verifier);
    let (outcome, _) = drive(
        &check,
        commitment.clone(),
        seed,
        &mut QuadraticStep::new(),
        &|_| None,
    );
    assert_eq!(outcome, ReplayOutcome::Withheld { step: 2 });
    // Serves a state that is not the committed one.
    let wrong = |step: u32| {
        let mut state = run.states[step as usize].clone();
        state[0] ^= 1;
        Some(ReplayInput::Fetched {
            step,
            state,
            path: run.log.path(step as usize),
        })
    };
    let (outcome, _) = drive(
        &check,
        commitment.clone(),
        seed,
        &mut QuadraticStep::new(),
        &wrong,
    );
    assert_eq!(outcome, ReplayOutcome::Withheld { step: 2 });
    // Answers for the wrong step: a caller error, not a verdict.
    let (mut session, _) = ReplaySession::start(&check, commitment.clone(), seed).unwrap();
    let input = honest_server(&run)(3).unwrap();
    assert!(matches!(
        session.handle(input, &mut QuadraticStep::new(), &verifier),
        Err(ReplayError::UnexpectedStep { got: 3, waiting: 2 })
    ));
    assert!(ReplaySession::start(
        &check_range(5, 13, &commitment, &verifier),
        commitment,
        seed
    )
    .is_err());
}
