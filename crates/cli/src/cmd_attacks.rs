//! `commonweight experiment attacks`: the attack suite on the real model.
//!
//! W workers in one process train the tch model with DiLoCo rounds (the `experiment sync` machinery: same setup,
//! inner AdamW, codec, outer optimizer, final evaluation); the last `round(FRACTION · W)` of them attack. Every
//! round, each worker's encoded update and signed commitment go through the production verifier
//! (`verify::Verifier::verify_round` with `node::verifier_model`'s tch loss evaluator), and `sync::aggregate`
//! averages only the peers it `included`. One run per attack plus an honest-only run on the same tokens.
//!
//! Data: item d is the d-th run of `--item-windows` K windows (seq_len + 1 tokens each) of the training split. Each
//! round a worker is assigned H · batch / K distinct items (`round::assign_data` from the round seed) and trains on
//! their windows in assignment order, `batch` windows per inner step, so every window the verifier scores it on was
//! trained on exactly once that round. The verifier reads all K windows of each item it samples.
//!
//! Replay: a worker keeps its full state after every inner step and commits the root of their step tree
//! (`verify::merkle`). After the committees decide, every update they would include is drawn for a replay spot
//! check with `--spot-check-ppm` (verify's verifiable draw, seeded by the round's commitments); the drawn verifier
//! re-executes `--spot-check-steps` steps from the served state (`node::verifier_model::ItemsStep`) and compares
//! bit for bit. A proven wrong step is a fraud proof, checked once and then binding on every verifier (the peer is
//! banned); a state not served counts as the worst rating observation. Attackers that train keep honest states of
//! what they trained; the others serve none.
//!
//! Counts: an attacking update is detected when it is not included in aggregation (rejected, or scored and
//! excluded by the rating). Stale-base attackers act honestly in round 0 (there is no older base); those updates
//! are counted in neither column. Verifiers: `--verifiers N` verifier nodes each run `verify_round` on every update
//! (the cheap gates), score only the updates whose committee they sit on, and absorb the others' scored verdicts;
//! an update is aggregated when most of its committee include it. Compute: the wall time of one verifier's
//! `verify_round` (loss evaluations included) plus the replays it was drawn for, averaged over verifiers and rounds,
//! against the mean time one honest worker spends in its H inner steps that round (keeping states not counted):
//! what one verifier node does per round against what one trainer does. The overhead column subtracts what any
//! node does to aggregate, verifier or not (BLAKE3 and decode of every blob).

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use model::Trainer;
use node::verifier_model::{
    cpu_repro_class, items_step_batch, train_state_bytes, DataItems, ItemAssignment, ItemsStep,
    ModelLossEvaluator, SyncUpdateDecoder,
};
use serde::Serialize;
use sync::aggregate::Aggregator;
use sync::codec::ErrorFeedback;
use types::{Hash32, PeerId, RoundNumber, RunId};
use verify::rating::RatingParams;
use verify::replay::SpotCheck;
use verify::{
    draw_spot_check, Commitment, DataAssignment, EvalError, LossEvaluator, NodeKey, Outcome,
    Reason, ReplayAction, ReplayInput, ReplayOutcome, ReplaySession, RoundContext, RoundInputs,
    SignedCommitment, StepLog, Submission, Verdict, Verifier,
};

use crate::cmd_experiment::{
    final_eval, gap_pct, parse_run, prepare_setup, train_config, RunSpec, Setup, SyncArgs,
};

#[derive(Args, Clone, Debug)]
pub struct AttacksArgs {
    /// Model preset: tiny, mini, small, base, 1b.
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Workers, honest and attacking, in one process.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Fraction of the workers that attack (the last ones by index).
    #[arg(long, default_value_t = 0.25)]
    attackers: f64,
    /// Inner AdamW steps per round (H).
    #[arg(long, default_value_t = 10)]
    inner_steps: u64,
    /// Update codec (see `experiment sync`).
    #[arg(long, default_value = "fp32")]
    codec: String,
    /// Attacks to run, comma separated, or `all`: noise, sign-flip, scale-100, zero, copy, stale-base,
    /// stale-base-undeclared, wrong-data, a-little-is-enough, nan, malformed, oversized.
    #[arg(long, default_value = "all")]
    attacks: String,
    /// Total training tokens (inputs) of each run: rounds = tokens / (workers · batch · seq_len · H).
    #[arg(long)]
    tokens: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A prepared dataset folder, or .txt/.jsonl/.parquet inputs (prepared with the byte tokenizer into OUT/dataset).
    #[arg(long)]
    data: PathBuf,
    /// Output folder: attacks.json.
    #[arg(long)]
    out: PathBuf,
    /// Sequences per worker per step (default: the preset's).
    #[arg(long)]
    batch: Option<usize>,
    /// Tokens per sequence (default: the preset's).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Peak inner AdamW learning rate (default: the preset's).
    #[arg(long)]
    lr: Option<f64>,
    /// libtorch threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Validation windows of the final evaluation; 0: the whole split.
    #[arg(long, default_value_t = 0)]
    final_eval_seqs: usize,
    /// z of the "a little is enough" attack (mean − z · std of the honest updates).
    #[arg(long, default_value_t = 1.0)]
    alie_z: f32,
    /// Windows (seq_len + 1 tokens) per data item; the verifier's score reads every window of the 4 items it
    /// samples per side, so this trades verifier compute for a less noisy score. Must divide H · batch.
    #[arg(long, default_value_t = 1)]
    item_windows: usize,
    /// Verifiers. With more than one, each update is scored by a committee of `--committee` of them (verify's
    /// verifiable draw), every verifier runs the cheap gates on every update and absorbs the others' scores, and an
    /// update is aggregated when most of its committee include it. Compute is reported per verifier.
    #[arg(long, default_value_t = 1)]
    verifiers: usize,
    /// Verifiers scoring each update (with `--verifiers` above 1).
    #[arg(long, default_value_t = 1)]
    committee: usize,
    /// Assigned items (and as many random items) the verifier evaluates per scored update.
    #[arg(long, default_value_t = types::limits::verify::SCORE_SAMPLE_IDS)]
    score_items: usize,
    /// Write every scored update's per-item losses to OUT/probes.jsonl (for calibrating the score).
    #[arg(long)]
    probe_log: bool,
    /// Print every verdict (score, normalized observation, rating) to stderr.
    #[arg(long)]
    verbose: bool,
    /// Chance, in parts per million, that an update the committee would include is replay spot-checked (verify's
    /// verifiable draw picks the (peer, round), the verifier and the steps); 0 turns replay off, and trainers then
    /// keep no step states.
    #[arg(long, default_value_t = 1_000_000)]
    spot_check_ppm: u32,
    /// Consecutive inner steps one spot check re-executes.
    #[arg(long, default_value_t = 1)]
    spot_check_steps: u32,
    /// Instead of running the suite: check one fraud proof (a file the suite wrote to OUT/fraud-proofs) by
    /// re-executing its step on this model and data (give the same model, data and training options as the run
    /// that wrote it). Exit status 0 when the proof proves fraud, an error naming the failed check otherwise.
    #[arg(long)]
    check_proof: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attack {
    Noise,
    SignFlip,
    Scale100,
    Zero,
    Copy,
    StaleBase,
    StaleBaseUndeclared,
    WrongData,
    LittleIsEnough,
    Nan,
    Malformed,
    Oversized,
}

const ALL_ATTACKS: [Attack; 12] = [
    Attack::Noise,
    Attack::SignFlip,
    Attack::Scale100,
    Attack::Zero,
    Attack::Copy,
    Attack::StaleBase,
    Attack::StaleBaseUndeclared,
    Attack::WrongData,
    Attack::LittleIsEnough,
    Attack::Nan,
    Attack::Malformed,
    Attack::Oversized,
];

impl Attack {
    fn name(self) -> &'static str {
        match self {
            Attack::Noise => "noise",
            Attack::SignFlip => "sign-flip",
            Attack::Scale100 => "scale-100",
            Attack::Zero => "zero",
            Attack::Copy => "copy",
            Attack::StaleBase => "stale-base",
            Attack::StaleBaseUndeclared => "stale-base-undeclared",
            Attack::WrongData => "wrong-data",
            Attack::LittleIsEnough => "a-little-is-enough",
            Attack::Nan => "nan",
            Attack::Malformed => "malformed",
            Attack::Oversized => "oversized",
        }
    }

    /// Whether the attacker trains its own honest update first (to copy its norm, flip it, break it...). Attacks
    /// that train on something else must not: a second H steps would also advance the attacker's AdamW state and
    /// schedule, and the norm gate would catch that instead of the attack.
    fn trains_own(self) -> bool {
        matches!(
            self,
            Attack::Noise | Attack::SignFlip | Attack::Scale100 | Attack::Nan | Attack::Malformed
        )
    }

    fn active_in(self, round: u64) -> bool {
        !matches!(self, Attack::StaleBase | Attack::StaleBaseUndeclared) || round > 0
    }
}

fn parse_attacks(text: &str) -> Result<Vec<Attack>> {
    if text.trim() == "all" {
        return Ok(ALL_ATTACKS.to_vec());
    }
    let attacks: Vec<Attack> = text
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            ALL_ATTACKS
                .iter()
                .copied()
                .find(|a| a.name() == t)
                .with_context(|| format!("unknown attack {t:?}"))
        })
        .collect::<Result<_>>()?;
    if attacks.is_empty() {
        bail!("--attacks lists no attack");
    }
    Ok(attacks)
}

/// One row of the table and of attacks.json.
#[derive(Serialize, Clone, Debug)]
struct AttackRow {
    attack: String,
    workers: usize,
    attackers: usize,
    rounds: u64,
    tokens: u64,
    attack_updates: u64,
    attack_detected: u64,
    /// Detected over attacking updates; null for the honest-only run.
    detection_rate: Option<f64>,
    honest_updates: u64,
    honest_excluded: u64,
    false_positive_rate: f64,
    /// Verdicts of the attacking updates, by outcome (`Rejected:Reason`, `Scored:excluded`, ...).
    attack_outcomes: BTreeMap<String, u64>,
    /// Verdicts of the honest updates that were not included.
    honest_exclusions: BTreeMap<String, u64>,
    /// Rounds in which the verifier included no update (the model did not move).
    empty_rounds: u64,
    val_loss: f32,
    honest_only_val_loss: f32,
    gap_pct: f64,
    verifiers: usize,
    committee: usize,
    /// What one verifier spends per round, on average over verifiers and rounds.
    verify_s_per_round: f64,
    /// The slowest single verifier round.
    verify_max_s_per_round: f64,
    /// Of which inside the loss evaluator (forward passes and parameter loads).
    verify_eval_s_per_round: f64,
    train_s_per_worker_round: f64,
    /// verify_s_per_round / train_s_per_worker_round (goal ≤ 0.10).
    verify_to_train_ratio: f64,
    /// Replay spot checks run (all verifiers together), and of them proven fraud and withheld states.
    spot_checks: u64,
    spot_check_frauds: u64,
    spot_check_withheld: u64,
    /// Of verify_s_per_round, the replays (per verifier, averaged).
    spot_check_s_per_round: f64,
    /// Checking each fraud proof once (re-executing its step), total over the run.
    fraud_proof_check_s: f64,
    /// What any node does per round to aggregate, verifier or not: BLAKE3 of every blob and its decode.
    aggregate_s_per_round: f64,
    /// (verify_s_per_round − aggregate_s_per_round) / train_s_per_worker_round: what verifying adds to a node
    /// that aggregates anyway.
    verify_overhead_to_train_ratio: f64,
    wall_s: f64,
}

/// What a run needs besides the setup.
struct World {
    setup: Setup,
    spec: RunSpec,
    items: DataItems,
    assignment: ItemAssignment,
    keys: Vec<NodeKey>,
    run_id: RunId,
    codec_id: u8,
    update_bytes_max: u64,
    rounds: u64,
    alie_z: f32,
    /// Validation windows evaluated per scored item.
    score_windows: usize,
    score_items: usize,
    verifiers: usize,
    committee: usize,
    probe_log: Option<PathBuf>,
    verbose: bool,
    /// The inner optimizer (replays build their trainer from it).
    train: model::TrainConfig,
    spot_check_ppm: u32,
    spot_check_steps: u32,
    /// Where every fraud proof is written (`--check-proof` checks one in a fresh process).
    proof_dir: PathBuf,
}

impl World {
    /// The replay executor of this world's workers: their model, schedule, data and threads.
    fn executor(&self) -> ItemsStep<'_> {
        ItemsStep::new(
            &self.items,
            self.setup.model.clone(),
            self.train.clone(),
            self.setup.params0.len(),
            self.setup.threads,
        )
    }
}

/// The folder of OUT that holds the fraud proofs, one file per proof.
const PROOF_DIR: &str = "fraud-proofs";

/// `--check-proof`: decode and check one fraud proof with this world's step executor.
fn check_proof(world: &World, path: &std::path::Path) -> Result<()> {
    let proof = crate::cmd_run::read_fraud_proof(path)?;
    let mut executor = world.executor();
    let finding = proof
        .check(&mut executor)
        .with_context(|| format!("{} does not prove fraud", path.display()))?;
    crate::cmd_run::print_finding(&proof, &finding);
    Ok(())
}

pub fn run(args: AttacksArgs) -> Result<()> {
    if args.workers < 2 {
        bail!("--workers must be at least 2");
    }
    if args.verifiers == 0 || args.committee == 0 || args.committee > args.verifiers {
        bail!("need 1 <= --committee <= --verifiers");
    }
    if !(0.0..1.0).contains(&args.attackers) {
        bail!("--attackers must be in [0, 1)");
    }
    let attacks = parse_attacks(&args.attacks)?;
    let attackers = ((args.attackers * args.workers as f64).round() as usize).max(1);
    if attackers * 2 >= args.workers {
        bail!(
            "{attackers} attackers of {} workers: honest peers must be a majority",
            args.workers
        );
    }
    fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let world = build_world(&args)?;
    if let Some(path) = &args.check_proof {
        return check_proof(&world, path);
    }
    println!(
        "model: {} preset, {} parameters; {} workers ({attackers} attacking) x batch {} x seq_len {}; H {}; {} rounds; codec {}; {} data items",
        world.setup.preset.name(),
        world.setup.params0.len(),
        world.setup.workers,
        world.setup.batch,
        world.setup.seq_len,
        world.spec.inner_steps,
        world.rounds,
        world.spec.codec,
        world.items.count(),
    );
    let honest = run_one(&world, None, 0, None)?;
    let honest_loss = honest.val_loss;
    print_row(&honest);
    let mut rows = vec![honest];
    write_rows(&args, &rows)?;
    for attack in attacks {
        let result = run_one(&world, Some(attack), attackers, Some(honest_loss))?;
        print_row(&result);
        rows.push(result);
        write_rows(&args, &rows)?;
    }
    print_table(&rows);
    println!("wrote {}", args.out.join("attacks.json").display());
    Ok(())
}

fn write_rows(args: &AttacksArgs, rows: &[AttackRow]) -> Result<()> {
    let path = args.out.join("attacks.json");
    fs::write(&path, serde_json::to_string_pretty(rows)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn build_world(args: &AttacksArgs) -> Result<World> {
    let sync_args = SyncArgs {
        preset: args.preset.clone(),
        workers: args.workers,
        inner_steps: args.inner_steps,
        codec: args.codec.clone(),
        runs: None,
        tokens: Some(args.tokens),
        seed: args.seed,
        out: args.out.clone(),
        data: Some(args.data.clone()),
        batch: args.batch,
        seq_len: args.seq_len,
        intermediate_size: None,
        kv_heads: None,
        lr: args.lr,
        outer: None,
        outer_lr: None,
        outer_momentum: None,
        ef_decay: None,
        outer_warmup: 0,
        shards: crate::cmd_experiment::ShardLayout::Contiguous,
        threads: args.threads,
        eval_seqs: 1,
        final_eval_seqs: args.final_eval_seqs,
        eval_points: 1,
        skip_single: true,
        swarm: None,
    };
    let spec = parse_run(&sync_args, "")?;
    let setup = prepare_setup(&sync_args)?;
    let rounds = (setup.steps / spec.inner_steps).max(1);
    let train = train_config(&setup, setup.batch, rounds * spec.inner_steps);
    let window = setup.seq_len + 1;
    let per_round = spec.inner_steps as usize * setup.batch;
    if args.item_windows == 0 || per_round % args.item_windows != 0 {
        bail!(
            "--item-windows {} must divide H x batch = {per_round}",
            args.item_windows
        );
    }
    let items = DataItems::new(
        setup.shards.concat(),
        args.item_windows * window,
        setup.seq_len,
    )?;
    let count =
        u32::try_from(per_round / args.item_windows).context("items per worker and round")?;
    let run_id = RunId(Hash32::of(
        format!("commonweight experiment attacks|{}", setup.baseline_key).as_bytes(),
    ));
    let assignment = ItemAssignment::new(
        Hash32::of(&[&run_id.0 .0[..], &b"dataset"[..]].concat()),
        items.count(),
        count,
    )?;
    let keys = (0..setup.workers)
        .map(|i| {
            let secret = Hash32::of(format!("attacks worker {i} seed {}", setup.seed).as_bytes());
            NodeKey::from_secret(secret.0)
        })
        .collect();
    let param_count = setup.params0.len();
    // Every codec's payload size is fixed by its parameters, so the encoding of zeros is the largest blob.
    let update_bytes_max = spec
        .codec
        .codec()
        .compress(&vec![0.0; param_count], None)
        .len() as u64;
    Ok(World {
        codec_id: spec.codec.id() as u8,
        setup,
        spec,
        items,
        assignment,
        keys,
        run_id,
        update_bytes_max,
        rounds,
        alie_z: args.alie_z,
        score_windows: args.item_windows,
        score_items: args.score_items,
        verifiers: args.verifiers,
        committee: args.committee,
        probe_log: args.probe_log.then(|| args.out.join("probes.jsonl")),
        verbose: args.verbose,
        train,
        spot_check_ppm: args.spot_check_ppm,
        spot_check_steps: args.spot_check_steps,
        proof_dir: args.out.join(PROOF_DIR),
    })
}

/// A loss evaluator that adds up the time spent inside it.
struct TimedEvaluator<'a> {
    inner: ModelLossEvaluator<'a>,
    spent: Duration,
}

impl LossEvaluator for TimedEvaluator<'_> {
    fn eval_loss(&mut self, params: &[f32], data_ids: &[u64]) -> Result<f32, EvalError> {
        let started = Instant::now();
        let loss = self.inner.eval_loss(params, data_ids);
        self.spent += started.elapsed();
        loss
    }

    // Forwarded, not left to the trait's default: that would load the parameters once per item.
    fn eval_item_losses(
        &mut self,
        params: &[f32],
        data_ids: &[u64],
    ) -> Result<Vec<f32>, EvalError> {
        let started = Instant::now();
        let losses = self.inner.eval_item_losses(params, data_ids);
        self.spent += started.elapsed();
        losses
    }
}

/// Per-run counters.
#[derive(Default)]
struct Tally {
    attack_updates: u64,
    attack_detected: u64,
    honest_updates: u64,
    honest_excluded: u64,
    attack_outcomes: BTreeMap<String, u64>,
    honest_exclusions: BTreeMap<String, u64>,
    empty_rounds: u64,
    verify_s: f64,
    /// The slowest single verifier's round.
    verify_max_s: f64,
    verify_eval_s: f64,
    train_s: f64,
    spot_checks: u64,
    spot_check_frauds: u64,
    spot_check_withheld: u64,
    /// All verifiers' replays together.
    spot_check_s: f64,
    fraud_proof_check_s: f64,
    aggregate_s: f64,
}

/// One worker's part of a round: what it trained (if anything), and what it commits and reveals.
struct Sent {
    blob: Vec<u8>,
    base_model_hash: Hash32,
    claimed_loss: f32,
    /// The trainer's state after each inner step, state 0 first (empty: it serves none), and their step tree.
    states: Vec<Vec<u8>>,
    log: StepLog,
}

impl Sent {
    fn untrained(blob: Vec<u8>, base_model_hash: Hash32, claimed_loss: f32) -> Sent {
        Sent {
            blob,
            base_model_hash,
            claimed_loss,
            states: Vec::new(),
            log: StepLog::default(),
        }
    }

    /// The committed step root; a worker that kept no states commits zeros and withholds when asked.
    fn step_root(&self) -> Hash32 {
        if self.states.is_empty() {
            Hash32::ZERO
        } else {
            self.log.root()
        }
    }
}

/// H inner steps of one worker: Δ = θ − θ_local, the mean loss, the states and the time in `train_step`.
struct Trained {
    delta: Vec<f32>,
    loss: f32,
    states: Vec<Vec<u8>>,
    log: StepLog,
    train_s: f64,
}

impl Trained {
    fn sent(self, blob: Vec<u8>, base_model_hash: Hash32) -> Sent {
        Sent {
            blob,
            base_model_hash,
            claimed_loss: self.loss,
            states: self.states,
            log: self.log,
        }
    }
}

fn run_one(
    world: &World,
    attack: Option<Attack>,
    attackers: usize,
    honest_loss: Option<f32>,
) -> Result<AttackRow> {
    let started = Instant::now();
    let setup = &world.setup;
    let label = attack.map_or("none (honest only)", Attack::name);
    let workers = setup.workers;
    let honest_count = workers - attackers;
    let train = train_config(setup, setup.batch, world.rounds * world.spec.inner_steps);
    let mut theta = setup.params0.clone();
    let mut previous_theta: Option<Vec<f32>> = None;
    let mut trainers = (0..workers)
        .map(|_| Trainer::with_params(setup.model.clone(), train.clone(), &theta, setup.threads))
        .collect::<Result<Vec<_>, _>>()?;
    let mut feedback: Vec<ErrorFeedback> =
        (0..workers).map(|_| world.spec.outer.feedback()).collect();
    let mut outer = world.spec.outer.build();
    let eval_trainer =
        Trainer::with_params(setup.model.clone(), train.clone(), &theta, setup.threads)?;
    let mut evaluator = TimedEvaluator {
        inner: ModelLossEvaluator::new(eval_trainer, &world.items, world.score_windows)?,
        spent: Duration::ZERO,
    };
    let sketch_seed = u64::from_le_bytes(world.run_id.0 .0[..8].try_into().expect("8 bytes"));
    let verifier_keys: Vec<NodeKey> = (0..world.verifiers)
        .map(|v| {
            let secret = Hash32::of(format!("attacks verifier {v} seed {}", setup.seed).as_bytes());
            NodeKey::from_secret(secret.0)
        })
        .collect();
    let mut verifiers: Vec<Verifier> = verifier_keys
        .iter()
        .map(|key| {
            let mut verifier = Verifier::new(key.clone(), RatingParams::default(), sketch_seed);
            verifier.score_items = world.score_items;
            verifier.committee_size = world.committee;
            verifier
        })
        .collect();
    let mut executor = world.executor();
    let verifier_ids: Vec<PeerId> = verifiers.iter().map(Verifier::peer_id).collect();
    // One verifier alone scores every update itself (no committee).
    let committee_set: &[PeerId] = if world.verifiers > 1 {
        &verifier_ids
    } else {
        &[]
    };
    let mut tally = Tally::default();
    let repro = cpu_repro_class(setup.threads);
    let peers: Vec<PeerId> = world.keys.iter().map(NodeKey::peer_id).collect();
    for round in 0..world.rounds {
        let number = RoundNumber(round);
        let base_hash = Hash32::of_f32s(&theta);
        let seed = round::round_seed(world.run_id, number, base_hash);
        let ctx = RoundContext {
            run: world.run_id,
            round: number,
            round_seed: seed,
            base_model_hash: base_hash,
            codec: world.codec_id,
            param_count: theta.len(),
            inner_steps: world.spec.inner_steps as u32,
            update_bytes_max: world.update_bytes_max,
            dataset_items: world.items.count(),
        };
        let active = attack.filter(|a| a.active_in(round));
        // Honest workers first: the attackers of some classes use their updates.
        let mut sent: Vec<Sent> = Vec::with_capacity(workers);
        let mut honest_updates: Vec<Vec<f32>> = Vec::with_capacity(honest_count);
        let mut train_s = 0.0;
        for index in 0..honest_count {
            let ids = world.assignment.assigned_ids(&seed, number, &peers[index]);
            let trained = train_delta(world, &mut trainers[index], &theta, &ids)?;
            train_s += trained.train_s;
            let blob = world
                .spec
                .codec
                .codec()
                .encode(&trained.delta, &mut feedback[index]);
            honest_updates.push(sync::codec::decode(&blob, theta.len())?);
            sent.push(trained.sent(blob, base_hash));
        }
        for index in honest_count..workers {
            let ids = world.assignment.assigned_ids(&seed, number, &peers[index]);
            let attacker = AttackerRound {
                world,
                theta: &theta,
                previous_theta: previous_theta.as_deref(),
                seed,
                round,
                index,
                ids: &ids,
                honest: &honest_updates,
            };
            sent.push(match active {
                Some(kind) => attacker.send(kind, &mut trainers[index])?,
                None => {
                    let trained = train_delta(world, &mut trainers[index], &theta, &ids)?;
                    let blob = world
                        .spec
                        .codec
                        .codec()
                        .encode(&trained.delta, &mut feedback[index]);
                    trained.sent(blob, base_hash)
                }
            });
        }
        let commitments: Vec<_> = sent
            .iter()
            .enumerate()
            .map(|(index, s)| {
                Commitment {
                    run: world.run_id,
                    round: number,
                    peer: peers[index],
                    base_model_hash: s.base_model_hash,
                    data_ids: world.assignment.assigned_ids(&seed, number, &peers[index]),
                    update_cid: Hash32::of(&s.blob),
                    update_bytes: s.blob.len() as u64,
                    codec: world.codec_id,
                    claimed_loss: s.claimed_loss,
                    repro: repro.clone(),
                    inner_steps: world.spec.inner_steps as u32,
                    step_root: s.step_root(),
                }
                .sign(&world.keys[index])
            })
            .collect();
        // Commit order is worker order: attackers (the last indices) commit after the honest peers, as a copier must.
        let submissions: Vec<Submission> = commitments
            .iter()
            .zip(&sent)
            .enumerate()
            .map(|(index, (commitment, s))| Submission {
                commitment,
                blob: &s.blob,
                committed_at_ms: index as u64,
            })
            .collect();
        let inputs = RoundInputs {
            ctx: &ctx,
            base_params: &theta,
            submissions: &submissions,
            assignment: &world.assignment,
            decoder: &SyncUpdateDecoder,
            verifiers: committee_set,
        };
        tally.aggregate_s += aggregation_baseline_s(&sent, theta.len());
        let mut reports = Vec::with_capacity(verifiers.len());
        let mut spent_s = Vec::with_capacity(verifiers.len());
        for verifier in &mut verifiers {
            let eval_before = evaluator.spent;
            let timer = Instant::now();
            reports.push(verifier.verify_round(&inputs, &mut evaluator)?);
            spent_s.push(timer.elapsed().as_secs_f64());
            tally.verify_eval_s += (evaluator.spent - eval_before).as_secs_f64();
        }
        if !committee_set.is_empty() {
            let all: Vec<verify::SignedVerdict> = reports
                .iter()
                .flat_map(|r| r.verdicts.iter().cloned())
                .collect();
            for verifier in &mut verifiers {
                verifier.absorb(&ctx, committee_set, &all);
            }
        }
        if let Some(path) = &world.probe_log {
            for report in &reports {
                log_probes(path, label, round, honest_count, report)?;
            }
        }
        tally.train_s += train_s / honest_count as f64;
        let mut report = decide(
            &reports,
            &verifier_ids,
            committee_set,
            &ctx,
            world.committee,
        );
        let checks = SpotChecks {
            world,
            label: attack.map_or("none", Attack::name),
            ctx: &ctx,
            commitments: &commitments,
            sent: &sent,
            verifier_ids: &verifier_ids,
            verifier_keys: &verifier_keys,
        };
        checks.run(
            &mut report,
            &mut verifiers,
            &mut executor,
            &mut spent_s,
            &mut tally,
        )?;
        // What one verifier spends on this round, on average, and the busiest one.
        let verify_s = spent_s.iter().sum::<f64>() / spent_s.len() as f64;
        tally.verify_s += verify_s;
        tally.verify_max_s = spent_s.iter().copied().fold(tally.verify_max_s, f64::max);
        for (index, signed) in report.verdicts.iter().enumerate() {
            let outcome = &signed.verdict.outcome;
            if world.verbose {
                let role = if index < honest_count {
                    "honest"
                } else {
                    "attacker"
                };
                eprintln!(
                    "    round {round} worker {index} ({role}): {}",
                    outcome_detail(outcome)
                );
            }
            let included = report.included.contains(&peers[index]);
            if index >= honest_count && active.is_some() {
                tally.attack_updates += 1;
                tally.attack_detected += u64::from(!included);
                *tally
                    .attack_outcomes
                    .entry(outcome_label(outcome))
                    .or_default() += 1;
            } else if index < honest_count || attack.is_none() {
                tally.honest_updates += 1;
                if !included {
                    tally.honest_excluded += 1;
                    *tally
                        .honest_exclusions
                        .entry(outcome_label(outcome))
                        .or_default() += 1;
                }
            }
        }
        let updates: Vec<(PeerId, Vec<f32>)> = report
            .included
            .iter()
            .map(|peer| {
                let index = peers
                    .iter()
                    .position(|p| p == peer)
                    .context("included peer")?;
                Ok((*peer, sync::codec::decode(&sent[index].blob, theta.len())?))
            })
            .collect::<Result<_>>()?;
        eprintln!(
            "  {label} round {}/{}: {} of {workers} included; verify {verify_s:.2} s, train {:.2} s per worker",
            round + 1,
            world.rounds,
            updates.len(),
            train_s / honest_count as f64,
        );
        previous_theta = Some(theta.clone());
        if updates.is_empty() {
            tally.empty_rounds += 1;
            continue;
        }
        let aggregate = Aggregator::Mean.aggregate(&updates)?;
        outer.step(&mut theta, &aggregate);
    }
    let final_trainer = Trainer::with_params(setup.model.clone(), train, &theta, setup.threads)?;
    let val_loss = final_eval(setup, &final_trainer)?;
    if !val_loss.is_finite() {
        bail!("{label}: validation loss is {val_loss}");
    }
    Ok(make_row(
        world,
        attack,
        attackers,
        tally,
        val_loss,
        honest_loss,
        started,
    ))
}

/// What any node does with a round's updates before it can aggregate, verifier or not: checks each blob's
/// BLAKE3 against its commitment and decodes it. Returns the seconds it took.
fn aggregation_baseline_s(sent: &[Sent], param_count: usize) -> f64 {
    let timer = Instant::now();
    for s in sent {
        std::hint::black_box(Hash32::of(&s.blob));
        let _ = std::hint::black_box(sync::codec::decode(&s.blob, param_count));
    }
    timer.elapsed().as_secs_f64()
}

/// One round's replay spot checks (verify's `replay`), run after the committees decided.
struct SpotChecks<'a> {
    world: &'a World,
    /// The run's attack name (names the proof files).
    label: &'a str,
    ctx: &'a RoundContext,
    commitments: &'a [SignedCommitment],
    sent: &'a [Sent],
    verifier_ids: &'a [PeerId],
    verifier_keys: &'a [NodeKey],
}

impl SpotChecks<'_> {
    /// Each update the committees would include is drawn with `--spot-check-ppm`, and the drawn verifier replays
    /// the drawn steps against the states its trainer serves. Proven fraud is checked once (as a node does before
    /// acting on a proof) and bans the peer at every verifier; a withheld state is the worst rating observation at
    /// every verifier. Either way the update is left out and its verdict becomes the replaying verifier's
    /// rejection. The replay's time is charged to that verifier.
    fn run(
        &self,
        report: &mut verify::RoundReport,
        verifiers: &mut [Verifier],
        executor: &mut ItemsStep,
        spent_s: &mut [f64],
        tally: &mut Tally,
    ) -> Result<()> {
        if self.world.spot_check_ppm == 0 {
            return Ok(());
        }
        let ctx = self.ctx;
        let draw_seed = self.draw_seed();
        for (index, commitment) in self.commitments.iter().enumerate() {
            let peer = commitment.commitment.peer;
            if !report.included.contains(&peer) {
                continue;
            }
            let Some(check) = draw_spot_check(
                &draw_seed,
                ctx.round,
                &peer,
                ctx.inner_steps,
                self.verifier_ids,
                self.world.spot_check_ppm,
                self.world.spot_check_steps,
            ) else {
                continue;
            };
            let v = self
                .verifier_ids
                .iter()
                .position(|id| *id == check.verifier)
                .context("the drawn verifier")?;
            let key = &self.verifier_keys[v];
            let timer = Instant::now();
            let outcome = replay(
                &check,
                commitment,
                ctx.round_seed,
                &self.sent[index],
                executor,
                key,
            )?;
            let took = timer.elapsed().as_secs_f64();
            spent_s[v] += took;
            tally.spot_check_s += took;
            tally.spot_checks += 1;
            let reason = match outcome {
                ReplayOutcome::Honest { .. } => continue,
                ReplayOutcome::Fraud(proof) => {
                    let timer = Instant::now();
                    let finding = proof.check(executor);
                    tally.fraud_proof_check_s += timer.elapsed().as_secs_f64();
                    // Our own honest replay signed it: a proof that does not check is a bug here.
                    if let Err(e) = finding {
                        bail!(
                            "verifier {v}'s fraud proof against worker {index} does not check: {e}"
                        );
                    }
                    tally.spot_check_frauds += 1;
                    for verifier in verifiers.iter_mut() {
                        verifier.ratings.ban(peer);
                    }
                    self.write_proof(&proof, index)?;
                    Reason::Fraud {
                        proof_hash: proof.hash(),
                        step: proof.body.step,
                    }
                }
                ReplayOutcome::Withheld { step } => {
                    tally.spot_check_withheld += 1;
                    let worst = -types::limits::verify::SCORE_OBSERVATION_ABS_MAX;
                    for verifier in verifiers.iter_mut() {
                        verifier.ratings.observe(peer, ctx.round, worst);
                    }
                    Reason::Withheld { step }
                }
            };
            report.included.retain(|p| *p != peer);
            report.verdicts[index] = Verdict {
                run: ctx.run,
                round: ctx.round,
                peer,
                update_cid: commitment.commitment.update_cid,
                verifier: check.verifier,
                outcome: Outcome::Rejected(reason),
            }
            .sign(key);
        }
        Ok(())
    }

    /// Writes a proof to `proof_dir` as `<label>-r<round>-w<worker>.proof` (the encoded bytes, as gossiped).
    fn write_proof(&self, proof: &verify::FraudProof, worker: usize) -> Result<()> {
        fs::create_dir_all(&self.world.proof_dir)
            .with_context(|| format!("creating {}", self.world.proof_dir.display()))?;
        let path = self.world.proof_dir.join(format!(
            "{}-r{}-w{worker}.proof",
            self.label, self.ctx.round.0
        ));
        fs::write(&path, proof.encode()).with_context(|| format!("writing {}", path.display()))
    }

    /// The draw's seed: the round seed and all of the round's commitments, so no trainer knows its checked steps
    /// before it commits. (The last to commit could grind its own commitment against it; a node uses a beacon
    /// drawn after the commit deadline instead.)
    fn draw_seed(&self) -> Hash32 {
        let mut bytes = self.ctx.round_seed.0.to_vec();
        for c in self.commitments {
            bytes.extend_from_slice(Hash32::of(&c.commitment.signing_bytes()).0.as_slice());
        }
        Hash32::of(&bytes)
    }
}

/// Drives one spot check to its end, serving the trainer's kept states (a state it did not keep is withheld).
fn replay(
    check: &SpotCheck,
    commitment: &SignedCommitment,
    round_seed: Hash32,
    sent: &Sent,
    executor: &mut ItemsStep,
    key: &NodeKey,
) -> Result<ReplayOutcome> {
    let (mut session, mut actions) = ReplaySession::start(check, commitment.clone(), round_seed)?;
    // The session asks for one state at a time and bounds its own fetches.
    loop {
        match actions
            .pop()
            .context("the replay session asked for nothing")?
        {
            ReplayAction::Finished(outcome) => return Ok(outcome),
            ReplayAction::Fetch { step, .. } => {
                let input = match sent.states.get(step as usize) {
                    Some(state) => ReplayInput::Fetched {
                        step,
                        state: state.clone(),
                        path: sent.log.path(step as usize),
                    },
                    None => ReplayInput::FetchFailed { step },
                };
                actions = session.handle(input, executor, key)?;
            }
        }
    }
}

fn make_row(
    world: &World,
    attack: Option<Attack>,
    attackers: usize,
    tally: Tally,
    val_loss: f32,
    honest_loss: Option<f32>,
    started: Instant,
) -> AttackRow {
    let rounds = world.rounds;
    let honest_only_val_loss = honest_loss.unwrap_or(val_loss);
    let per_round = |s: f64| s / rounds as f64;
    let setup = &world.setup;
    AttackRow {
        attack: attack.map_or("none", Attack::name).into(),
        workers: setup.workers,
        attackers,
        rounds,
        tokens: rounds
            * world.spec.inner_steps
            * (setup.workers * setup.batch * setup.seq_len) as u64,
        attack_updates: tally.attack_updates,
        attack_detected: tally.attack_detected,
        detection_rate: (tally.attack_updates > 0)
            .then(|| tally.attack_detected as f64 / tally.attack_updates as f64),
        honest_updates: tally.honest_updates,
        honest_excluded: tally.honest_excluded,
        false_positive_rate: tally.honest_excluded as f64 / tally.honest_updates.max(1) as f64,
        attack_outcomes: tally.attack_outcomes,
        honest_exclusions: tally.honest_exclusions,
        empty_rounds: tally.empty_rounds,
        val_loss,
        honest_only_val_loss,
        gap_pct: gap_pct(val_loss, honest_only_val_loss),
        verifiers: world.verifiers,
        committee: world.committee,
        verify_s_per_round: per_round(tally.verify_s),
        verify_max_s_per_round: tally.verify_max_s,
        verify_eval_s_per_round: per_round(tally.verify_eval_s) / world.verifiers as f64,
        train_s_per_worker_round: per_round(tally.train_s),
        verify_to_train_ratio: tally.verify_s / tally.train_s.max(1e-9),
        spot_checks: tally.spot_checks,
        spot_check_frauds: tally.spot_check_frauds,
        spot_check_withheld: tally.spot_check_withheld,
        spot_check_s_per_round: per_round(tally.spot_check_s) / world.verifiers as f64,
        fraud_proof_check_s: tally.fraud_proof_check_s,
        aggregate_s_per_round: per_round(tally.aggregate_s),
        verify_overhead_to_train_ratio: (tally.verify_s - tally.aggregate_s).max(0.0)
            / tally.train_s.max(1e-9),
        wall_s: started.elapsed().as_secs_f64(),
    }
}

/// The round's decision per update: the verdict of the first member of its scoring committee, included when most
/// of the committee include it. With one verifier, that verifier's report.
fn decide(
    reports: &[verify::RoundReport],
    verifier_ids: &[PeerId],
    committee_set: &[PeerId],
    ctx: &RoundContext,
    committee: usize,
) -> verify::RoundReport {
    if committee_set.is_empty() {
        return reports[0].clone();
    }
    let mut verdicts = Vec::with_capacity(reports[0].verdicts.len());
    let mut included = Vec::new();
    for (index, first) in reports[0].verdicts.iter().enumerate() {
        let peer = first.verdict.peer;
        let members =
            verify::committee::scoring_committee(&ctx.round_seed, &peer, committee_set, committee);
        let of_member = |m: &PeerId| {
            let v = verifier_ids
                .iter()
                .position(|id| id == m)
                .expect("a verifier");
            &reports[v].verdicts[index]
        };
        let yes = members
            .iter()
            .filter(|m| of_member(m).verdict.outcome.included())
            .count();
        let majority = 2 * yes > members.len();
        if majority {
            included.push(peer);
        }
        // Record a verdict that agrees with the decision (one always exists).
        let verdict = members
            .iter()
            .map(of_member)
            .find(|v| v.verdict.outcome.included() == majority)
            .unwrap_or_else(|| of_member(&members[0]));
        verdicts.push(verdict.clone());
    }
    included.sort();
    verify::RoundReport {
        verdicts,
        included,
        probes: Vec::new(),
    }
}

/// Appends one JSON line per scored update: attack, round, worker, role, per-item losses.
fn log_probes(
    path: &std::path::Path,
    label: &str,
    round: u64,
    honest_count: usize,
    report: &verify::RoundReport,
) -> Result<()> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    for (index, probe) in &report.probes {
        let side = |l: &verify::score::ItemLosses| serde_json::json!({"before": l.before, "after": l.after, "reference": l.reference});
        let line = serde_json::json!({
            "attack": label,
            "round": round,
            "worker": index,
            "honest": *index < honest_count,
            "own": side(&probe.own),
            "random": side(&probe.random),
        });
        writeln!(file, "{line}")?;
    }
    Ok(())
}

/// `Rejected:NormOutlier`, `Scored:excluded`, `Accepted:included`, ...
fn outcome_label(outcome: &Outcome) -> String {
    let inclusion = |included: bool| if included { "included" } else { "excluded" };
    match outcome {
        Outcome::Accepted { included, .. } => format!("Accepted:{}", inclusion(*included)),
        Outcome::Scored { included, .. } => format!("Scored:{}", inclusion(*included)),
        Outcome::Rejected(reason) => {
            let text = format!("{reason:?}");
            let name: String = text
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            format!("Rejected:{name}")
        }
    }
}

fn outcome_detail(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Scored {
            score,
            observation,
            rating_mean,
            included,
            ..
        } => format!(
            "scored {score:+.5} observation {observation:+.3} rating {rating_mean:.3} included {included}"
        ),
        Outcome::Rejected(reason) => format!("rejected {reason:?}"),
        other => outcome_label(other),
    }
}

/// H inner steps from `theta` on the windows of items `ids` in order (`items_step_batch`); with spot checks on,
/// keeps the state after every step (state 0 first) and its step-tree leaf, as a trainer must to serve replays.
/// Only the steps themselves are timed.
fn train_delta(
    world: &World,
    trainer: &mut Trainer,
    theta: &[f32],
    ids: &[u64],
) -> Result<Trained> {
    trainer.set_params(theta)?;
    let record = world.spot_check_ppm > 0;
    let mut states = Vec::new();
    let mut log = StepLog::default();
    let mut keep = |trainer: &Trainer| {
        if record {
            let state = train_state_bytes(trainer);
            log.record(&state);
            states.push(state);
        }
    };
    keep(trainer);
    let step_tokens = world.train.tokens_per_step();
    let mut total = 0.0f64;
    let mut train_s = 0.0;
    for step in 0..world.spec.inner_steps as u32 {
        let batch = items_step_batch(&world.items, ids, step_tokens, step)?;
        let timer = Instant::now();
        total += f64::from(trainer.train_step(&batch)?);
        train_s += timer.elapsed().as_secs_f64();
        keep(trainer);
    }
    let local = trainer.params();
    let delta = theta.iter().zip(&local).map(|(t, l)| t - l).collect();
    Ok(Trained {
        delta,
        loss: (total / world.spec.inner_steps.max(1) as f64) as f32,
        states,
        log,
        train_s,
    })
}

/// What one attacker sees in a round.
struct AttackerRound<'a> {
    world: &'a World,
    theta: &'a [f32],
    previous_theta: Option<&'a [f32]>,
    seed: Hash32,
    round: u64,
    index: usize,
    ids: &'a [u64],
    /// The honest updates of this round, decoded (the attacker is assumed to see them all).
    honest: &'a [Vec<f32>],
}

impl AttackerRound<'_> {
    /// The attack's update. Attackers that train keep honest step states of what they trained (so a replay of a
    /// manipulated blob's steps passes: the other gates must catch it); the others keep none and withhold.
    fn send(&self, kind: Attack, trainer: &mut Trainer) -> Result<Sent> {
        let world = self.world;
        let codec = world.spec.codec.codec();
        let base_model_hash = Hash32::of_f32s(self.theta);
        let own = if kind.trains_own() {
            Some(train_delta(world, trainer, self.theta, self.ids)?)
        } else {
            None
        };
        let encode = |values: &[f32]| codec.compress(values, None);
        let untrained = |blob: Vec<u8>| Sent::untrained(blob, base_model_hash, 2.0);
        let own_delta: Vec<f32> = own.as_ref().map(|t| t.delta.clone()).unwrap_or_default();
        let trained = move |blob: Vec<u8>| -> Result<Sent> {
            Ok(own
                .context("the attack trains its own update")?
                .sent(blob, base_model_hash))
        };
        match kind {
            Attack::Noise => {
                let norm = l2(&own_delta);
                let noise = gaussian(own_delta.len(), self.noise_seed());
                let scale = (norm / l2(&noise).max(1e-30)) as f32;
                trained(encode(&noise.iter().map(|x| x * scale).collect::<Vec<_>>()))
            }
            Attack::SignFlip => trained(encode(
                &own_delta[..].iter().map(|x| -x).collect::<Vec<_>>(),
            )),
            Attack::Scale100 => trained(encode(
                &own_delta[..].iter().map(|x| 100.0 * x).collect::<Vec<_>>(),
            )),
            Attack::Zero => Ok(untrained(encode(&vec![0.0; self.theta.len()]))),
            Attack::Copy => {
                let victim = self.round as usize % self.honest.len();
                Ok(untrained(encode(&self.honest[victim])))
            }
            Attack::StaleBase | Attack::StaleBaseUndeclared => {
                let old = self
                    .previous_theta
                    .context("stale base needs a previous round")?;
                let stale = train_delta(world, trainer, old, self.ids)?;
                let declared = if kind == Attack::StaleBase {
                    Hash32::of_f32s(old)
                } else {
                    base_model_hash
                };
                let blob = encode(&stale.delta);
                Ok(stale.sent(blob, declared))
            }
            Attack::WrongData => {
                // Trains on the items assigned to a peer that does not exist (its own stranger, so that two such
                // attackers are not copies of each other), and commits its own assignment with the step tree of
                // what it really trained.
                let stranger = PeerId(
                    Hash32::of(
                        &[
                            &self.seed.0[..],
                            &b"stranger"[..],
                            &(self.index as u64).to_le_bytes(),
                        ]
                        .concat(),
                    )
                    .0,
                );
                let other =
                    world
                        .assignment
                        .assigned_ids(&self.seed, RoundNumber(self.round), &stranger);
                let wrong = train_delta(world, trainer, self.theta, &other)?;
                let blob = encode(&wrong.delta);
                Ok(wrong.sent(blob, base_model_hash))
            }
            Attack::LittleIsEnough => Ok(untrained(encode(&little_is_enough(
                self.honest,
                world.alie_z,
            )))),
            Attack::Nan => {
                let mut poisoned = own_delta.clone();
                let at = self.index % poisoned.len();
                poisoned[at] = f32::NAN;
                trained(encode(&poisoned))
            }
            Attack::Malformed => {
                let mut blob = encode(&own_delta);
                blob.truncate(blob.len() / 2);
                trained(blob)
            }
            Attack::Oversized => {
                let mut blob = encode(&self.honest[0]);
                blob.extend_from_slice(&[0u8; 4096]);
                Ok(untrained(blob))
            }
        }
    }

    fn noise_seed(&self) -> u64 {
        (self.round << 16) ^ self.index as u64 ^ 0x5EED
    }
}

/// Baruch et al. 2019: per coordinate, mean − z · std of the honest updates.
fn little_is_enough(honest: &[Vec<f32>], z: f32) -> Vec<f32> {
    let n = honest.len() as f64;
    (0..honest[0].len())
        .map(|j| {
            let mean = honest.iter().map(|u| f64::from(u[j])).sum::<f64>() / n;
            let var = honest
                .iter()
                .map(|u| (f64::from(u[j]) - mean).powi(2))
                .sum::<f64>()
                / n;
            (mean - f64::from(z) * var.sqrt()) as f32
        })
        .collect()
}

fn l2(values: &[f32]) -> f64 {
    values
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}

/// Standard normal values (Box–Muller over splitmix64), deterministic in `seed`.
fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    let mut uniform = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut x = state;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (uniform(), uniform());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

fn print_row(row: &AttackRow) {
    let detection = row
        .detection_rate
        .map_or("-".to_string(), |d| format!("{:.1}%", 100.0 * d));
    println!(
        "{}: detected {}/{} ({detection}), honest excluded {}/{}, val loss {:.4} ({:+.2}% vs honest-only), verify/train {:.1}% (overhead {:.1}%), {} spot checks ({} fraud) ({:.0} s)",
        row.attack,
        row.attack_detected,
        row.attack_updates,
        row.honest_excluded,
        row.honest_updates,
        row.val_loss,
        row.gap_pct,
        100.0 * row.verify_to_train_ratio,
        100.0 * row.verify_overhead_to_train_ratio,
        row.spot_checks,
        row.spot_check_frauds,
        row.wall_s,
    );
}

fn print_table(rows: &[AttackRow]) {
    println!();
    println!(
        "| {:<22} | {:>13} | {:>10} | {:>11} | {:>8} | {:>7} | {:>12} | {:>8} | {:<40} |",
        "attack",
        "detected",
        "rate",
        "honest FP",
        "val",
        "gap %",
        "verify/train",
        "overhead",
        "attacking verdicts"
    );
    println!("|{}|", ["---"; 9].join("|"));
    for r in rows {
        let rate = r
            .detection_rate
            .map_or("-".to_string(), |d| format!("{:.1}%", 100.0 * d));
        let outcomes: Vec<String> = r
            .attack_outcomes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!(
            "| {:<22} | {:>13} | {:>10} | {:>11} | {:>8.4} | {:>+7.2} | {:>11.1}% | {:>7.1}% | {:<40} |",
            r.attack,
            format!("{}/{}", r.attack_detected, r.attack_updates),
            rate,
            format!("{}/{}", r.honest_excluded, r.honest_updates),
            r.val_loss,
            r.gap_pct,
            100.0 * r.verify_to_train_ratio,
            100.0 * r.verify_overhead_to_train_ratio,
            outcomes.join(", "),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attack_list_parses_names_and_rejects_unknown_ones() {
        assert_eq!(parse_attacks("all").unwrap().len(), ALL_ATTACKS.len());
        assert_eq!(
            parse_attacks("zero, nan").unwrap(),
            vec![Attack::Zero, Attack::Nan]
        );
        assert!(parse_attacks("zero,bogus").is_err());
        assert!(parse_attacks(",").is_err());
    }

    #[test]
    fn little_is_enough_is_mean_minus_z_std() {
        let honest = vec![vec![1.0, 0.0], vec![3.0, 0.0]];
        assert_eq!(little_is_enough(&honest, 1.0), vec![1.0, 0.0]);
    }
}
