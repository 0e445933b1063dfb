//! `verify-fraud-proof`: checks a fraud proof file in a fresh process, or makes a demo proof.
//!
//! Usage:
//!   verify-fraud-proof <file> [--class-threads N]   check; exit 0 = fraud proven, 1 = proof invalid, 2 = usage/IO
//!   verify-fraud-proof make <out> [--cheat-step K] [--steps H] [--forge-honest]
//!
//! The step executor is the stand-in (`verify::standin::QuadraticStep`, a pure quadratic SGD step) until node
//! plugs in the tch trainer. `--class-threads N` checks as another reproducibility class (cross-class tolerance).
//! `make` runs a stand-in trainer that cheats at step K, spot-checks all its steps with the replay session and writes
//! the resulting proof; `--forge-honest` instead writes a proof, correctly signed by the verifier, that accuses an
//! honest step (which `check` must refuse).

use std::process::ExitCode;

use types::{Hash32, RoundNumber, RunId};
use verify::merkle::StepLog;
use verify::replay::SpotCheck;
use verify::standin::{self, QuadraticStep};
use verify::{
    Commitment, FraudProof, FraudProofBody, NodeKey, ReplayAction, ReplayInput, ReplayOutcome,
    ReplaySession, StepContext,
};

const TRAINER_SECRET: [u8; 32] = [11; 32];
const VERIFIER_SECRET: [u8; 32] = [22; 32];
const DEMO_PARAMS: usize = 64;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("make") => make(&args[1..]),
        Some(path) if !path.starts_with('-') => check(path, &args[1..]),
        _ => Err(usage()),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("verify-fraud-proof: {message}");
            ExitCode::from(2)
        }
    }
}

fn usage() -> String {
    "usage: verify-fraud-proof <file> [--class-threads N] | make <out> [--cheat-step K] [--steps H] [--forge-honest]"
        .to_string()
}

fn flag_value(args: &[String], name: &str) -> Result<Option<u32>, String> {
    let Some(pos) = args.iter().position(|a| a == name) else {
        return Ok(None);
    };
    let value = args.get(pos + 1).ok_or(format!("{name} needs a value"))?;
    value
        .parse()
        .map(Some)
        .map_err(|_| format!("{name}: {value:?} is not a number"))
}

fn check(path: &str, args: &[String]) -> Result<ExitCode, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut executor = QuadraticStep::new();
    if let Some(threads) = flag_value(args, "--class-threads")? {
        executor.repro.threads =
            u16::try_from(threads).map_err(|_| "--class-threads too large".to_string())?;
    }
    let proof = match FraudProof::decode(&bytes) {
        Ok(proof) => proof,
        Err(e) => {
            println!("INVALID: does not decode: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    match proof.check(&mut executor) {
        Ok(finding) => {
            let mode = if finding.exact {
                "bit-exact"
            } else {
                "cross-class tolerance"
            };
            println!(
                "VALID: peer {} committed a wrong step {} ({mode}); proof {}",
                finding.peer, finding.step, finding.proof_hash
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("INVALID: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn make(args: &[String]) -> Result<ExitCode, String> {
    let out = args
        .first()
        .filter(|a| !a.starts_with('-'))
        .ok_or_else(usage)?;
    let steps = flag_value(args, "--steps")?.unwrap_or(16);
    let cheat_step = flag_value(args, "--cheat-step")?.unwrap_or(steps / 2 + 1);
    if steps == 0 || cheat_step >= steps {
        return Err(format!(
            "need 0 <= cheat step ({cheat_step}) < steps ({steps})"
        ));
    }
    let forge = args.iter().any(|a| a == "--forge-honest");
    let trainer = NodeKey::from_secret(TRAINER_SECRET);
    let verifier = NodeKey::from_secret(VERIFIER_SECRET);
    let round_seed = Hash32::of(b"verify-fraud-proof demo round seed");
    let ctx = StepContext {
        run: RunId(Hash32::of(b"verify-fraud-proof demo run")),
        round: RoundNumber(3),
        round_seed,
        peer: trainer.peer_id(),
        data_ids: vec![5, 17, 42],
        step: 0,
    };
    let start = standin::initial_state(DEMO_PARAMS, &round_seed);
    let cheat = if forge { None } else { Some(cheat_step) };
    let run = standin::train(&ctx, start, steps, cheat).map_err(|e| e.to_string())?;
    let commitment = commitment_for(&ctx, &run.log, steps).sign(&trainer);
    let proof = if forge {
        forge_proof(commitment, round_seed, &run, cheat_step, &verifier)
    } else {
        spot_check(commitment, round_seed, &run, steps, &verifier)?
    };
    std::fs::write(out, proof.encode()).map_err(|e| format!("cannot write {out}: {e}"))?;
    println!(
        "wrote {out}: proof of step {} ({} bytes)",
        proof.body.step,
        proof.encode().len()
    );
    Ok(ExitCode::SUCCESS)
}

fn commitment_for(ctx: &StepContext, log: &StepLog, steps: u32) -> Commitment {
    Commitment {
        run: ctx.run,
        round: ctx.round,
        peer: ctx.peer,
        base_model_hash: Hash32::of(b"demo base model"),
        data_ids: ctx.data_ids.clone(),
        update_cid: Hash32::of(b"demo update"),
        update_bytes: 4 * DEMO_PARAMS as u64,
        codec: 0,
        claimed_loss: 1.5,
        repro: standin::standin_class(),
        inner_steps: steps,
        step_root: log.root(),
    }
}

/// Runs a replay session over every step, serving the trainer's states from memory.
fn spot_check(
    commitment: verify::SignedCommitment,
    round_seed: Hash32,
    run: &standin::StandinRun,
    steps: u32,
    verifier: &NodeKey,
) -> Result<FraudProof, String> {
    let check = SpotCheck {
        peer: commitment.commitment.peer,
        round: commitment.commitment.round,
        verifier: verifier.peer_id(),
        first_step: 0,
        end_step: steps,
    };
    let mut executor = QuadraticStep::new();
    let (mut session, mut actions) =
        ReplaySession::start(&check, commitment, round_seed).map_err(|e| e.to_string())?;
    loop {
        match actions.pop() {
            Some(ReplayAction::Fetch { step, .. }) => {
                let input = ReplayInput::Fetched {
                    step,
                    state: run.states[step as usize].clone(),
                    path: run.log.path(step as usize),
                };
                actions = session
                    .handle(input, &mut executor, verifier)
                    .map_err(|e| e.to_string())?;
            }
            Some(ReplayAction::Finished(ReplayOutcome::Fraud(proof))) => return Ok(*proof),
            Some(ReplayAction::Finished(other)) => {
                return Err(format!("spot check found no fraud: {other:?}"))
            }
            None => return Err("replay session stopped without a result".into()),
        }
    }
}

fn forge_proof(
    commitment: verify::SignedCommitment,
    round_seed: Hash32,
    run: &standin::StandinRun,
    step: u32,
    verifier: &NodeKey,
) -> FraudProof {
    let k = step as usize;
    FraudProofBody {
        commitment,
        round_seed,
        step,
        state_before: run.states[k].clone(),
        path_before: run.log.path(k),
        state_after: run.states[k + 1].clone(),
        path_after: run.log.path(k + 1),
        verifier: verifier.peer_id(),
        verifier_repro: standin::standin_class(),
        replayed_after_hash: Hash32::of(b"a lie"),
    }
    .sign(verifier)
}
