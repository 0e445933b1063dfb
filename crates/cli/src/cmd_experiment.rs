//! `commonweight experiment sync`: W simulated workers training with an outer optimizer and an
//! update codec, against fp32 data-parallel and a single worker, on exactly the same tokens.
//!
//! Token accounting: one data-parallel step is `workers · batch · seq_len` tokens (inputs only),
//! so `--tokens N` gives `S = round(N / (workers · batch · seq_len))` steps for every run:
//! - data-parallel: one trainer, global batch `workers · batch`, S steps; the batch of step t is
//!   the concatenation of every worker's batch t. Bytes per worker: an fp32 gradient per step,
//!   `S · 4 · params`.
//! - low-communication: each worker trains its own shard with batch `batch` for H inner steps per
//!   round (S steps in all, the same LR schedule), sends its encoded pseudo-gradient, and every
//!   round the decoded updates are averaged (ordered by peer id) and applied by the outer
//!   optimizer. Bytes per worker: the encoded sizes actually produced.
//! - single worker: one trainer, batch `batch`, `workers · S` steps over the same batches.
//!
//! Validation loss is the mean next-token loss (nats per token; nats per byte with the byte
//! tokenizer) over the first `--eval-seqs` windows of the validation split.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use model::{ModelConfig, Preset, TrainConfig, Trainer};
use serde::{Deserialize, Serialize};
use sync::aggregate::Aggregator;
use sync::codec::{decode, CodecKind, ErrorFeedback};
use sync::outer::{NesterovOuter, OuterOptimizer, SparseLocoOuter};
use types::{Hash32, PeerId};

#[derive(Subcommand)]
pub enum ExperimentCommand {
    /// Low-communication training (DiLoCo, SparseLoCo, DeMo codecs) against data-parallel.
    Sync(SyncArgs),
    /// The attack suite on the real model: attackers among DiLoCo workers, every update through the verifier.
    Attacks(crate::cmd_attacks::AttacksArgs),
}

#[derive(Args, Clone, Debug)]
pub struct SyncArgs {
    /// Model preset: tiny, micro, mini, small, base, 1b.
    #[arg(long, default_value = "tiny")]
    pub(crate) preset: String,
    /// Simulated workers, each with its own shard of the training split (see `--shards`).
    #[arg(long, default_value_t = 8)]
    pub(crate) workers: usize,
    /// Inner AdamW steps per round (H).
    #[arg(long, default_value_t = 10)]
    pub(crate) inner_steps: u64,
    /// Update codec: fp32, bf16, fp16, int8, topk, dct (options: see `sync::codec::CodecKind`).
    #[arg(long, default_value = "fp32")]
    pub(crate) codec: String,
    /// Several low-communication runs in one invocation (the baselines train once), separated by
    /// `;`. Each run is `key=value` fields joined by `/`: `codec`, `h`, `outer`, `outer_lr`,
    /// `momentum`, `ef` (a decay, or `off`), `warmup` (outer rounds); a field left out takes its
    /// flag's value. Example:
    /// `codec=fp32/h=10; codec=topk:k=64/h=30/ef=0.9`.
    #[arg(long)]
    pub(crate) runs: Option<String>,
    /// Total training tokens (inputs), the same for every run.
    #[arg(long, required_unless_present = "swarm")]
    pub(crate) tokens: Option<u64>,
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Output folder: results.json, curves.json, baselines/ and runs/ (finished runs, reused by
    /// later invocations with the same settings), loss_vs_tokens.svg, loss_vs_bytes.svg.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// A prepared dataset folder (with dataset.json), or .txt/.jsonl/.parquet inputs to prepare
    /// with the byte tokenizer into OUT/dataset.
    #[arg(long, required_unless_present = "swarm")]
    pub(crate) data: Option<PathBuf>,
    /// Sequences per worker per step (default: the preset's).
    #[arg(long)]
    pub(crate) batch: Option<usize>,
    /// Tokens per sequence (default: the preset's).
    #[arg(long)]
    pub(crate) seq_len: Option<usize>,
    /// Override the preset's MLP width (issue 3's reference model is `tiny` with 512).
    #[arg(long)]
    pub(crate) intermediate_size: Option<usize>,
    /// Override the preset's key/value head count (issue 3's reference model is `tiny` with 4).
    #[arg(long)]
    pub(crate) kv_heads: Option<usize>,
    /// Peak inner AdamW learning rate (default: the preset's).
    #[arg(long)]
    pub(crate) lr: Option<f64>,
    /// Outer optimizer: nesterov or sparseloco (default: sparseloco for topk and dct, else nesterov).
    #[arg(long)]
    pub(crate) outer: Option<String>,
    /// Outer learning rate (default: 0.7 nesterov, 1.0 sparseloco).
    #[arg(long)]
    pub(crate) outer_lr: Option<f32>,
    /// Nesterov momentum (default 0.9).
    #[arg(long)]
    pub(crate) outer_momentum: Option<f32>,
    /// Error-feedback decay (default: 0.95 with sparseloco; nesterov runs have no feedback unless set).
    #[arg(long)]
    pub(crate) ef_decay: Option<f32>,
    /// How the training split is cut into worker shards: `contiguous` (worker i gets the i-th
    /// slice: a few whole plays each, so workers see different text) or `interleaved` (blocks of
    /// 32 windows dealt round-robin: every shard is drawn from the whole corpus, as the swarm's
    /// per-round data assignment is).
    #[arg(long, value_enum, default_value_t = ShardLayout::Contiguous)]
    pub(crate) shards: ShardLayout,
    /// Outer warmup: the outer step's scale rises linearly over this many rounds (0: none).
    #[arg(long, default_value_t = 0)]
    pub(crate) outer_warmup: u64,
    /// libtorch threads.
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: usize,
    /// Validation windows evaluated at each curve point.
    #[arg(long, default_value_t = 64)]
    pub(crate) eval_seqs: usize,
    /// Validation windows of the final evaluation (the table's val loss); 0: the whole split.
    #[arg(long, default_value_t = 0)]
    pub(crate) final_eval_seqs: usize,
    /// Evaluation points per run (plus the start).
    #[arg(long, default_value_t = 20)]
    pub(crate) eval_points: u64,
    /// Skip the single-worker baseline (it costs as much compute as data-parallel).
    #[arg(long)]
    pub(crate) skip_single: bool,
    /// Instead of the runs above: run this harness on a finished `commonweight swarm` run folder's schedule (its
    /// seed, workers, data assignment, codec and H, from run.json and history.json), and compare the final
    /// validation loss and parameters with the swarm's. Use the swarm's --threads (1 by default) for equal bits.
    #[arg(long, value_name = "DIR")]
    pub(crate) swarm: Option<PathBuf>,
}

/// One row of the table and of results.json.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Row {
    run: String,
    codec: String,
    outer: String,
    inner_steps: u64,
    workers: usize,
    tokens: u64,
    bytes_per_worker: u64,
    /// Data-parallel bytes over these bytes; null for the single worker (it sends nothing).
    ratio_vs_ddp: Option<f64>,
    val_loss: f32,
    ddp_val_loss: f32,
    gap_pct: f64,
    seed: u64,
    preset: String,
    wall_s: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Point {
    tokens: u64,
    bytes_per_worker: u64,
    val_loss: f32,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Curve {
    label: String,
    points: Vec<Point>,
}

/// A finished baseline run, cached in OUT/baselines so a table of many configurations trains it once.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct RunOutcome {
    val_loss: f32,
    bytes_per_worker: u64,
    curve: Curve,
    wall_s: f64,
}

pub(crate) struct Setup {
    pub(crate) model: ModelConfig,
    pub(crate) preset: Preset,
    pub(crate) batch: usize,
    pub(crate) seq_len: usize,
    pub(crate) lr: f64,
    pub(crate) workers: usize,
    pub(crate) steps: u64,
    pub(crate) shards: Vec<Vec<u32>>,
    /// The first `--eval-seqs` validation windows: the curves' points.
    pub(crate) eval_tokens: Vec<u32>,
    /// The first `--final-eval-seqs` windows (all by default): the table's val loss.
    pub(crate) final_eval_tokens: Vec<u32>,
    pub(crate) params0: Vec<f32>,
    pub(crate) seed: u64,
    pub(crate) threads: usize,
    pub(crate) eval_points: u64,
    /// Identifies everything the baselines depend on.
    pub(crate) baseline_key: String,
}

pub fn run(command: ExperimentCommand) -> Result<()> {
    match command {
        ExperimentCommand::Sync(args) => run_sync(args),
        ExperimentCommand::Attacks(args) => crate::cmd_attacks::run(args),
    }
}

fn run_sync(args: SyncArgs) -> Result<()> {
    if let Some(dir) = &args.swarm {
        return run_on_swarm(dir, &args.out, args.threads);
    }
    let runs = parse_runs(&args)?;
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let setup = prepare_setup(&args)?;
    println!(
        "model: {} preset, {} parameters; {} workers x batch {} x seq_len {}; {} data-parallel steps ({} tokens); {} low-communication runs",
        setup.preset.name(),
        setup.params0.len(),
        setup.workers,
        setup.batch,
        setup.seq_len,
        setup.steps,
        setup.steps * tokens_per_ddp_step(&setup),
        runs.len(),
    );

    let ddp = cached(
        &args.out,
        "baselines",
        &format!("ddp-{}", setup.baseline_key),
        || run_ddp(&setup),
    )?;
    println!("data-parallel: val loss {:.4}", ddp.val_loss);
    let single = if args.skip_single {
        None
    } else {
        let outcome = cached(
            &args.out,
            "baselines",
            &format!("single-{}", setup.baseline_key),
            || run_single(&setup),
        )?;
        println!("single worker: val loss {:.4}", outcome.val_loss);
        Some(outcome)
    };

    let tokens = setup.steps * tokens_per_ddp_step(&setup);
    let row = |run: &str, codec: String, outer: String, h: u64, outcome: &RunOutcome| Row {
        run: run.into(),
        codec,
        outer,
        inner_steps: h,
        workers: setup.workers,
        tokens,
        bytes_per_worker: outcome.bytes_per_worker,
        ratio_vs_ddp: (outcome.bytes_per_worker > 0)
            .then(|| ddp.bytes_per_worker as f64 / outcome.bytes_per_worker as f64),
        val_loss: outcome.val_loss,
        ddp_val_loss: ddp.val_loss,
        gap_pct: gap_pct(outcome.val_loss, ddp.val_loss),
        seed: setup.seed,
        preset: setup.preset.name().into(),
        wall_s: outcome.wall_s,
    };
    let mut rows = vec![row(
        "data-parallel",
        "fp32".into(),
        "allreduce".into(),
        1,
        &ddp,
    )];
    let mut curves = vec![ddp.curve.clone()];
    if let Some(single) = &single {
        rows.push(row(
            "single-worker",
            "none".into(),
            "none".into(),
            0,
            single,
        ));
        curves.push(single.curve.clone());
    }
    let mut all_rows = merge_results(&args.out, &rows)?;
    let mut all_curves = merge_curves(&args.out, &curves)?;
    // Results are written after every run, so a long table interrupted keeps what finished.
    for spec in &runs {
        let label = spec.label();
        let key = Hash32::of(format!("{}|{label}", setup.baseline_key).as_bytes()).to_hex();
        let low_comm = cached(&args.out, "runs", &format!("run-{}", &key[..16]), || {
            run_low_comm(&setup, spec, &label)
        })?;
        println!(
            "{label}: val loss {:.4} ({:.0} s)",
            low_comm.val_loss, low_comm.wall_s
        );
        let low_comm_row = row(
            "low-comm",
            spec.codec.to_string(),
            spec.outer.describe(),
            spec.inner_steps,
            &low_comm,
        );
        all_rows = merge_results(&args.out, &[low_comm_row])?;
        all_curves = merge_curves(&args.out, &[low_comm.curve.clone()])?;
        write_plots(&args.out, &all_curves)?;
    }
    write_plots(&args.out, &all_curves)?;
    print_table(&all_rows);
    println!(
        "wrote {}, {}, {}",
        args.out.join("results.json").display(),
        args.out.join("loss_vs_tokens.svg").display(),
        args.out.join("loss_vs_bytes.svg").display()
    );
    Ok(())
}

/// How the training split becomes worker shards.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShardLayout {
    Contiguous,
    Interleaved,
}

/// Windows per interleaved block: long enough that few windows straddle two blocks.
const INTERLEAVE_BLOCK_WINDOWS: usize = 32;

/// Cuts `train` into `workers` disjoint shards of `shard_len` tokens each.
fn split_shards(
    train: &[u32],
    workers: usize,
    shard_len: usize,
    layout: ShardLayout,
    seq_len: usize,
) -> Vec<Vec<u32>> {
    let usable = &train[..shard_len * workers];
    match layout {
        ShardLayout::Contiguous => usable.chunks(shard_len).map(<[u32]>::to_vec).collect(),
        ShardLayout::Interleaved => {
            let block = (seq_len + 1) * INTERLEAVE_BLOCK_WINDOWS;
            let mut shards = vec![Vec::with_capacity(shard_len + block); workers];
            for (index, chunk) in usable.chunks(block).enumerate() {
                shards[index % workers].extend_from_slice(chunk);
            }
            shards
        }
    }
}

/// One low-communication configuration: codec, H, and outer optimizer.
pub(crate) struct RunSpec {
    pub(crate) codec: CodecKind,
    pub(crate) inner_steps: u64,
    pub(crate) outer: OuterChoice,
}

impl RunSpec {
    fn label(&self) -> String {
        format!(
            "{} {} H={}",
            self.codec,
            self.outer.describe(),
            self.inner_steps
        )
    }
}

/// The runs of `--runs`, or the single run the flags describe.
fn parse_runs(args: &SyncArgs) -> Result<Vec<RunSpec>> {
    let Some(list) = &args.runs else {
        return Ok(vec![parse_run(args, "")?]);
    };
    let runs: Vec<RunSpec> = list
        .split(';')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| parse_run(args, item).with_context(|| format!("--runs item {item:?}")))
        .collect::<Result<_>>()?;
    if runs.is_empty() {
        bail!("--runs lists no run");
    }
    Ok(runs)
}

/// Parses one `key=value/key=value` run; fields left out take the flags' values.
pub(crate) fn parse_run(args: &SyncArgs, item: &str) -> Result<RunSpec> {
    let mut codec_text = args.codec.clone();
    let mut inner_steps = args.inner_steps;
    let mut outer = args.outer.clone();
    let mut lr = args.outer_lr;
    let mut momentum = args.outer_momentum;
    let mut ef_decay = args.ef_decay.map(Some);
    let mut warmup = args.outer_warmup;
    for field in item.split('/').map(str::trim).filter(|f| !f.is_empty()) {
        let (key, value) = field
            .split_once('=')
            .with_context(|| format!("field {field:?} is not key=value"))?;
        let number = || -> Result<f32> {
            value
                .trim()
                .parse::<f32>()
                .ok()
                .filter(|x| x.is_finite())
                .with_context(|| format!("{key}={value:?} is not a number"))
        };
        match key.trim() {
            "codec" => codec_text = value.trim().to_string(),
            "h" => {
                inner_steps = value
                    .trim()
                    .parse()
                    .with_context(|| format!("h={value:?} is not a step count"))?
            }
            "outer" => outer = Some(value.trim().to_string()),
            "outer_lr" => lr = Some(number()?),
            "momentum" => momentum = Some(number()?),
            "warmup" => {
                warmup = value
                    .trim()
                    .parse()
                    .with_context(|| format!("warmup={value:?} is not a round count"))?
            }
            "ef" if value.trim() == "off" => ef_decay = Some(None),
            "ef" => {
                let decay = number()?;
                if !(0.0..=1.0).contains(&decay) {
                    bail!("ef={decay}: a decay must be in [0, 1]");
                }
                ef_decay = Some(Some(decay));
            }
            other => {
                bail!("unknown field {other:?}; expected codec, h, outer, outer_lr, momentum, ef or warmup")
            }
        }
    }
    let codec: CodecKind = codec_text
        .parse()
        .with_context(|| format!("codec {codec_text}"))?;
    if inner_steps == 0 {
        bail!("inner steps (H) must be at least 1");
    }
    let outer_name = match outer.as_deref() {
        Some(name @ ("nesterov" | "sparseloco")) => name.to_string(),
        Some(other) => bail!("outer {other:?}: expected nesterov or sparseloco"),
        None if matches!(codec, CodecKind::TopK(_) | CodecKind::DctSign(_)) => "sparseloco".into(),
        None => "nesterov".into(),
    };
    let sparse = outer_name == "sparseloco";
    let outer = OuterChoice {
        lr: lr.unwrap_or(if sparse { 1.0 } else { 0.7 }),
        momentum: momentum.unwrap_or(0.9),
        ef_decay: ef_decay.unwrap_or(sparse.then_some(0.95)),
        warmup_rounds: warmup,
        name: outer_name,
    };
    Ok(RunSpec {
        codec,
        inner_steps,
        outer,
    })
}

pub(crate) fn gap_pct(loss: f32, ddp_loss: f32) -> f64 {
    (f64::from(loss) - f64::from(ddp_loss)) / f64::from(ddp_loss) * 100.0
}

pub(crate) fn tokens_per_ddp_step(setup: &Setup) -> u64 {
    (setup.workers * setup.batch * setup.seq_len) as u64
}

pub(crate) fn prepare_setup(args: &SyncArgs) -> Result<Setup> {
    let preset = Preset::parse(&args.preset)?;
    let data_path = args.data.as_ref().context("--data is required")?;
    let tokens = args.tokens.context("--tokens is required")?;
    let dataset = if data_path.join("dataset.json").is_file() {
        data::PreparedDataset::open(data_path)?
    } else {
        let spec = data::TokenizerSpec::parse("bytes")?;
        data::prepare(
            &[data_path.clone()],
            spec,
            &args.out.join("dataset"),
            0.05,
            0,
        )
        .with_context(|| format!("preparing {}", data_path.display()))?
    };
    let defaults = preset.train_config(1);
    let batch = args.batch.unwrap_or(defaults.batch_size);
    let seq_len = args.seq_len.unwrap_or(defaults.seq_len);
    let lr = args.lr.unwrap_or(defaults.lr);
    let mut model = preset.model_config(dataset.vocab_size());
    model.max_position_embeddings = model.max_position_embeddings.max(seq_len);
    if let Some(inter) = args.intermediate_size {
        model.intermediate_size = inter;
    }
    if let Some(kv) = args.kv_heads {
        model.num_key_value_heads = kv;
    }
    model.validate()?;
    let per_step = (args.workers * batch * seq_len) as u64;
    let steps = ((tokens as f64 / per_step as f64).round() as u64).max(1);
    let train = dataset.train_tokens()?;
    let shard_len = train.len() / args.workers;
    if shard_len <= seq_len + 1 {
        bail!(
            "{} training tokens are too few for {} shards of seq_len {}",
            train.len(),
            args.workers,
            seq_len
        );
    }
    let shards = split_shards(&train, args.workers, shard_len, args.shards, seq_len);
    let val = dataset.val_tokens()?;
    let window = seq_len + 1;
    let windows = (val.len() / window).min(args.eval_seqs);
    if windows == 0 {
        bail!(
            "the validation split ({} tokens) is shorter than one window of {window}",
            val.len()
        );
    }
    let eval_tokens = val[..windows * window].to_vec();
    let all_windows = val.len() / window;
    let final_windows = match args.final_eval_seqs {
        0 => all_windows,
        n => n.min(all_windows),
    };
    let final_eval_tokens = val[..final_windows * window].to_vec();
    let params0 = model::init_params(&model, args.seed);
    let layout_key = match args.shards {
        ShardLayout::Contiguous => "",
        ShardLayout::Interleaved => "|interleaved",
    };
    let baseline_key = Hash32::of(
        (format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
            preset.name(),
            model.intermediate_size,
            model.num_key_value_heads,
            final_windows,
            args.workers,
            batch,
            seq_len,
            lr,
            steps,
            args.seed,
            args.eval_seqs,
            args.eval_points,
            dataset.manifest.train.tokens,
        ) + layout_key)
            .as_bytes(),
    )
    .to_hex()[..16]
        .to_string();
    Ok(Setup {
        model,
        preset,
        batch,
        seq_len,
        lr,
        workers: args.workers,
        steps,
        shards,
        eval_tokens,
        final_eval_tokens,
        params0,
        seed: args.seed,
        threads: args.threads,
        eval_points: args.eval_points.max(1),
        baseline_key,
    })
}

/// The inner-optimizer settings of a run of `total_steps` steps with `batch` sequences each.
pub(crate) fn train_config(setup: &Setup, batch: usize, total_steps: u64) -> TrainConfig {
    let mut train = setup.preset.train_config(total_steps);
    train.batch_size = batch;
    train.seq_len = setup.seq_len;
    train.lr = setup.lr;
    train
}

/// Worker `worker`'s batch for its local step `step`: the same tokens in every run.
fn worker_batch(setup: &Setup, worker: usize, step: u64) -> Result<Vec<u32>> {
    let seed = setup.seed ^ (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    Ok(data::sample_batch(
        seed,
        &setup.shards[worker],
        step,
        setup.batch,
        setup.seq_len,
    )?)
}

fn eval_due(step: u64, total: u64, points: u64) -> bool {
    let every = (total / points).max(1);
    (step + 1) % every == 0 || step + 1 == total
}

fn run_ddp(setup: &Setup) -> Result<RunOutcome> {
    let started = Instant::now();
    let train = train_config(setup, setup.batch * setup.workers, setup.steps);
    let mut trainer =
        Trainer::with_params(setup.model.clone(), train, &setup.params0, setup.threads)?;
    let bytes_per_step = 4 * setup.params0.len() as u64;
    let mut points = vec![Point {
        tokens: 0,
        bytes_per_worker: 0,
        val_loss: trainer.eval_loss(&setup.eval_tokens)?,
    }];
    for step in 0..setup.steps {
        let mut tokens = Vec::new();
        for worker in 0..setup.workers {
            tokens.extend(worker_batch(setup, worker, step)?);
        }
        trainer.train_step(&tokens)?;
        if eval_due(step, setup.steps, setup.eval_points) {
            points.push(Point {
                tokens: (step + 1) * tokens_per_ddp_step(setup),
                bytes_per_worker: (step + 1) * bytes_per_step,
                val_loss: trainer.eval_loss(&setup.eval_tokens)?,
            });
            eprintln!(
                "  data-parallel step {}/{}: val {:.4} ({:.0} s)",
                step + 1,
                setup.steps,
                points.last().unwrap().val_loss,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let final_loss = final_eval(setup, &trainer)?;
    finish("fp32 data-parallel", points, final_loss, started)
}

fn run_single(setup: &Setup) -> Result<RunOutcome> {
    let started = Instant::now();
    let total = setup.steps * setup.workers as u64;
    let train = train_config(setup, setup.batch, total);
    let mut trainer =
        Trainer::with_params(setup.model.clone(), train, &setup.params0, setup.threads)?;
    let mut points = vec![Point {
        tokens: 0,
        bytes_per_worker: 0,
        val_loss: trainer.eval_loss(&setup.eval_tokens)?,
    }];
    let tokens_per_step = (setup.batch * setup.seq_len) as u64;
    for step in 0..total {
        let worker = (step % setup.workers as u64) as usize;
        trainer.train_step(&worker_batch(setup, worker, step / setup.workers as u64)?)?;
        if eval_due(step, total, setup.eval_points) {
            points.push(Point {
                tokens: (step + 1) * tokens_per_step,
                bytes_per_worker: 0,
                val_loss: trainer.eval_loss(&setup.eval_tokens)?,
            });
            eprintln!(
                "  single worker step {}/{}: val {:.4} ({:.0} s)",
                step + 1,
                total,
                points.last().unwrap().val_loss,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let final_loss = final_eval(setup, &trainer)?;
    finish("single worker", points, final_loss, started)
}

/// Outer optimizer and error-feedback settings of a low-communication run.
pub(crate) struct OuterChoice {
    pub(crate) name: String,
    pub(crate) lr: f32,
    pub(crate) momentum: f32,
    pub(crate) ef_decay: Option<f32>,
    /// Rounds over which the outer step's scale rises linearly to 1 (0: full from the start).
    pub(crate) warmup_rounds: u64,
}

impl OuterChoice {
    pub(crate) fn build(&self) -> Box<dyn OuterOptimizer> {
        match self.name.as_str() {
            "sparseloco" => Box::new(SparseLocoOuter::new(self.lr)),
            _ => Box::new(NesterovOuter::new(self.lr, self.momentum)),
        }
    }

    pub(crate) fn feedback(&self) -> ErrorFeedback {
        self.ef_decay
            .map_or_else(ErrorFeedback::off, ErrorFeedback::new)
    }

    pub(crate) fn describe(&self) -> String {
        let mut text = match self.name.as_str() {
            "sparseloco" => format!("sparseloco(lr={})", self.lr),
            _ => format!("nesterov(lr={},m={})", self.lr, self.momentum),
        };
        if let Some(decay) = self.ef_decay {
            text.push_str(&format!("+ef{decay}"));
        }
        if self.warmup_rounds > 0 {
            text.push_str(&format!("+warmup{}", self.warmup_rounds));
        }
        text
    }

    /// Scale of the outer step in `round` (counted from 0): (round + 1) / warmup, at most 1.
    pub(crate) fn warmup_scale(&self, round: u64) -> f32 {
        if round >= self.warmup_rounds {
            return 1.0;
        }
        (round + 1) as f32 / self.warmup_rounds as f32
    }
}

fn run_low_comm(setup: &Setup, spec: &RunSpec, label: &str) -> Result<RunOutcome> {
    let (codec, outer_choice, inner_steps) = (spec.codec, &spec.outer, spec.inner_steps);
    let started = Instant::now();
    let train = train_config(setup, setup.batch, setup.steps);
    let mut theta = setup.params0.clone();
    let mut workers = (0..setup.workers)
        .map(|_| Trainer::with_params(setup.model.clone(), train.clone(), &theta, setup.threads))
        .collect::<Result<Vec<_>, _>>()?;
    let mut feedback: Vec<ErrorFeedback> = (0..setup.workers)
        .map(|_| outer_choice.feedback())
        .collect();
    let mut outer = outer_choice.build();
    let mut evaluator = Trainer::with_params(setup.model.clone(), train, &theta, setup.threads)?;
    let rounds = setup.steps.div_ceil(inner_steps);
    let mut bytes_sent = 0u64;
    let mut points = vec![Point {
        tokens: 0,
        bytes_per_worker: 0,
        val_loss: evaluator.eval_loss(&setup.eval_tokens)?,
    }];
    for round in 0..rounds {
        let first = round * inner_steps;
        let last = (first + inner_steps).min(setup.steps);
        let mut work = Vec::with_capacity(setup.workers);
        for (index, (trainer, feedback)) in workers.iter_mut().zip(&mut feedback).enumerate() {
            let batches = (first..last)
                .map(|step| worker_batch(setup, index, step))
                .collect::<Result<Vec<_>>>()?;
            work.push(RoundWork {
                peer: worker_peer(index),
                trainer,
                feedback,
                batches,
            });
        }
        let scale = outer_choice.warmup_scale(round);
        bytes_sent += low_comm_round(&mut theta, work, codec, outer.as_mut(), scale)?;
        if eval_due(round, rounds, setup.eval_points) {
            evaluator.set_params(&theta)?;
            points.push(Point {
                tokens: last * tokens_per_ddp_step(setup),
                bytes_per_worker: bytes_sent / setup.workers as u64,
                val_loss: evaluator.eval_loss(&setup.eval_tokens)?,
            });
            eprintln!(
                "  {label} round {}/{rounds}: val {:.4} ({:.0} s)",
                round + 1,
                points.last().unwrap().val_loss,
                started.elapsed().as_secs_f64()
            );
        }
    }
    evaluator.set_params(&theta)?;
    let final_loss = final_eval(setup, &evaluator)?;
    finish(label, points, final_loss, started)
}

/// One worker's part of an outer round: who it is, its inner trainer and error feedback, and the batches of its
/// inner steps.
pub(crate) struct RoundWork<'a> {
    pub peer: PeerId,
    pub trainer: &'a mut Trainer,
    pub feedback: &'a mut ErrorFeedback,
    pub batches: Vec<Vec<u32>>,
}

/// One outer round of the harness: every worker trains from `theta` on its batches; its pseudo-gradient
/// (θ − θ_local) goes through `codec` with its error feedback and is decoded again; the decoded updates are
/// averaged in peer order, scaled by `scale` (outer warmup), and the outer optimizer steps `theta`.
/// Returns the bytes the workers sent.
pub(crate) fn low_comm_round(
    theta: &mut [f32],
    mut work: Vec<RoundWork<'_>>,
    codec: CodecKind,
    outer: &mut dyn OuterOptimizer,
    scale: f32,
) -> Result<u64> {
    work.sort_by_key(|w| w.peer);
    let mut bytes_sent = 0u64;
    let mut updates = Vec::with_capacity(work.len());
    for worker in work {
        worker.trainer.set_params(theta)?;
        for batch in &worker.batches {
            worker.trainer.train_step(batch)?;
        }
        let local = worker.trainer.params();
        let delta: Vec<f32> = theta.iter().zip(&local).map(|(g, l)| g - l).collect();
        let bytes = codec.codec().encode(&delta, worker.feedback);
        bytes_sent += bytes.len() as u64;
        updates.push((worker.peer, decode(&bytes, delta.len())?));
    }
    if updates.is_empty() {
        return Ok(0);
    }
    let mut aggregate = Aggregator::Mean.aggregate(&updates)?;
    if scale < 1.0 {
        aggregate.iter_mut().for_each(|d| *d *= scale);
    }
    outer.step(theta, &aggregate);
    Ok(bytes_sent)
}

/// `experiment sync --swarm DIR`: the harness on the swarm's schedule, against the swarm's own result.
fn run_on_swarm(dir: &Path, out: &Path, threads: usize) -> Result<()> {
    let started = Instant::now();
    let run = node::Run::load(&dir.join("run.json"))
        .with_context(|| format!("{} holds no swarm run file", dir.display()))?;
    let history_path = dir.join(crate::cmd_swarm::HISTORY_FILE);
    let history: Vec<crate::cmd_swarm::HistoryView> = serde_json::from_slice(
        &fs::read(&history_path).with_context(|| format!("reading {}", history_path.display()))?,
    )
    .with_context(|| format!("{} is not a swarm history", history_path.display()))?;
    let report_path = dir.join("report.json");
    let report: serde_json::Value = serde_json::from_slice(
        &fs::read(&report_path).with_context(|| format!("reading {}", report_path.display()))?,
    )?;
    let swarm_val_loss = report["final_val_loss"]
        .as_f64()
        .context("report.json has no final_val_loss")?;
    let swarm_hash = history
        .last()
        .map(|h| h.model_hash.clone())
        .unwrap_or_default();
    let work = node::work::Workload::open(&run)?;
    let workers: std::collections::BTreeSet<&String> =
        history.iter().flat_map(|h| h.included.iter()).collect();
    println!(
        "experiment sync on the swarm's schedule: {} rounds, {} workers, codec {}, H {}, {} libtorch thread(s)",
        history.len(),
        workers.len(),
        run.spec.codec,
        run.genesis.inner_steps,
        threads
    );
    let result = sync_on_swarm_rounds(&run, &work, &history, threads)?;
    let val_loss = f64::from(work.eval_loss(&result.theta)?);
    let model_hash = Hash32::of_f32s(&result.theta).to_hex();
    let gap_pct = (swarm_val_loss - val_loss) / val_loss * 100.0;
    let comparison = serde_json::json!({
        "swarm": dir.display().to_string(),
        "rounds": history.len(),
        "workers": workers.len(),
        "threads": threads,
        "swarm_val_loss": swarm_val_loss,
        "experiment_val_loss": val_loss,
        "gap_pct": gap_pct,
        "swarm_model_hash": swarm_hash,
        "experiment_model_hash": model_hash,
        "bit_identical": model_hash == swarm_hash,
        "first_divergent_round": result.first_divergent_round,
        "bytes_sent": result.bytes_sent,
        "wall_s": started.elapsed().as_secs_f64(),
    });
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    fs::write(
        out.join("swarm_comparison.json"),
        serde_json::to_vec_pretty(&comparison)?,
    )?;
    println!(
        "swarm val loss {swarm_val_loss:.4}, experiment val loss {val_loss:.4} (swarm {gap_pct:+.3}%); bit-identical parameters: {}",
        model_hash == swarm_hash
    );
    println!("wrote {}", out.join("swarm_comparison.json").display());
    Ok(())
}

/// What the harness ends on when it runs a swarm's rounds.
pub(crate) struct SwarmRoundsRun {
    pub theta: Vec<f32>,
    /// The first round whose model hash differs from the one the swarm agreed on, if any.
    pub first_divergent_round: Option<u64>,
    pub bytes_sent: u64,
}

/// The harness's round loop (`low_comm_round`) on a swarm's schedule: for every settled round, its included
/// trainers as workers, each on the round protocol's data assignment (round seed, peer id, dataset) and batch
/// seed, with the run's codec, H, inner optimizer and outer optimizer. Each trainer keeps its own inner AdamW state
/// and error feedback across rounds, as a node does; with the nodes' thread count a fault-free swarm and this must
/// end on the same bits.
pub(crate) fn sync_on_swarm_rounds(
    run: &node::Run,
    work: &node::work::Workload,
    history: &[crate::cmd_swarm::HistoryView],
    threads: usize,
) -> Result<SwarmRoundsRun> {
    let mut theta = work.genesis_params().to_vec();
    let mut outer = work.outer_from_state(&work.initial_outer_state())?;
    let mut workers: std::collections::BTreeMap<PeerId, (Trainer, ErrorFeedback)> =
        std::collections::BTreeMap::new();
    let mut first_divergent_round = None;
    let mut bytes_sent = 0u64;
    for round in history {
        let seed = Hash32::from_hex(&round.seed).context("history seed")?;
        let batch_seed = node::work::Workload::batch_seed(seed);
        let mut schedule = Vec::with_capacity(round.included.len());
        for trainer_hex in &round.included {
            let peer = node::runspec::parse_peer(trainer_hex).context("history trainer")?;
            if !workers.contains_key(&peer) {
                let fresh = (
                    work.new_trainer(&theta, threads.max(1))?,
                    work.new_feedback(),
                );
                workers.insert(peer, fresh);
            }
            let ids = crate::cmd_swarm::assigned_shards(run, seed, peer);
            let tokens = work.assigned_tokens(&ids)?;
            let batches = (0..u64::from(run.genesis.inner_steps))
                .map(|step| {
                    data::sample_batch(batch_seed, &tokens, step, run.spec.batch, run.spec.seq_len)
                })
                .collect::<Result<Vec<_>, _>>()?;
            schedule.push((peer, batches));
        }
        let mut work_items = Vec::with_capacity(schedule.len());
        for (peer, (trainer, feedback)) in workers.iter_mut() {
            if let Some(at) = schedule.iter().position(|(p, _)| p == peer) {
                let batches = std::mem::take(&mut schedule[at].1);
                work_items.push(RoundWork {
                    peer: *peer,
                    trainer,
                    feedback,
                    batches,
                });
            }
        }
        bytes_sent += low_comm_round(&mut theta, work_items, run.codec, outer.as_mut(), 1.0)?;
        if first_divergent_round.is_none() && Hash32::of_f32s(&theta).to_hex() != round.model_hash {
            first_divergent_round = Some(round.round);
        }
    }
    Ok(SwarmRoundsRun {
        theta,
        first_divergent_round,
        bytes_sent,
    })
}

/// A stable peer id per simulated worker, so aggregation order is by worker index.
fn worker_peer(index: usize) -> PeerId {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&(index as u64).to_be_bytes());
    PeerId(id)
}

/// Mean validation loss over the final-evaluation windows, in slices of `EVAL_WINDOWS_PER_CALL`
/// windows (every window has the same token count, so the mean of slice means weighted by
/// window count is the mean over all windows).
pub(crate) fn final_eval(setup: &Setup, trainer: &Trainer) -> Result<f32> {
    let window = setup.seq_len + 1;
    let mut weighted = 0.0f64;
    let mut windows = 0usize;
    for slice in setup
        .final_eval_tokens
        .chunks(EVAL_WINDOWS_PER_CALL * window)
    {
        let count = slice.len() / window;
        weighted += f64::from(trainer.eval_loss(slice)?) * count as f64;
        windows += count;
    }
    Ok((weighted / windows as f64) as f32)
}

/// Validation windows per forward pass of the final evaluation (bounds its memory).
const EVAL_WINDOWS_PER_CALL: usize = 64;

fn finish(
    label: &str,
    points: Vec<Point>,
    final_loss: f32,
    started: Instant,
) -> Result<RunOutcome> {
    let last = points.last().context("no evaluation points")?;
    if !final_loss.is_finite() {
        bail!("{label}: validation loss is {final_loss}");
    }
    Ok(RunOutcome {
        val_loss: final_loss,
        bytes_per_worker: last.bytes_per_worker,
        curve: Curve {
            label: label.into(),
            points: points.clone(),
        },
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// Runs `make` unless OUT/DIR/KEY.json holds its result already (a finished run is never
/// trained twice: a long table can be split over several invocations).
fn cached(
    out: &Path,
    dir: &str,
    key: &str,
    make: impl FnOnce() -> Result<RunOutcome>,
) -> Result<RunOutcome> {
    let path = out.join(dir).join(format!("{key}.json"));
    if let Ok(text) = fs::read_to_string(&path) {
        if let Ok(outcome) = serde_json::from_str(&text) {
            println!("reusing {}", path.display());
            return Ok(outcome);
        }
    }
    let outcome = make()?;
    fs::create_dir_all(path.parent().expect("has a parent"))?;
    fs::write(&path, serde_json::to_string_pretty(&outcome)?)?;
    Ok(outcome)
}

/// Adds `rows` to OUT/results.json, replacing earlier rows of the same configuration.
fn merge_results(out: &Path, rows: &[Row]) -> Result<Vec<Row>> {
    let path = out.join("results.json");
    let mut all: Vec<Row> = match fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a results file", path.display()))?,
        Err(_) => Vec::new(),
    };
    let key = |r: &Row| {
        (
            r.run.clone(),
            r.codec.clone(),
            r.outer.clone(),
            r.inner_steps,
            r.workers,
            r.tokens,
            r.seed,
            r.preset.clone(),
        )
    };
    all.retain(|old| rows.iter().all(|new| key(new) != key(old)));
    all.extend(rows.iter().cloned());
    fs::write(&path, serde_json::to_string_pretty(&all)?)?;
    Ok(all)
}

/// Adds `curves` to OUT/curves.json (one per label, newest wins).
fn merge_curves(out: &Path, curves: &[Curve]) -> Result<Vec<Curve>> {
    let path = out.join("curves.json");
    let mut all: Vec<Curve> = match fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a curves file", path.display()))?,
        Err(_) => Vec::new(),
    };
    all.retain(|old| curves.iter().all(|new| new.label != old.label));
    all.extend(curves.iter().cloned());
    fs::write(&path, serde_json::to_string_pretty(&all)?)?;
    Ok(all)
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| {:<14} | {:<34} | {:<30} | {:>3} | {:>7} | {:>10} | {:>14} | {:>10} | {:>8} | {:>8} |",
        "run",
        "codec",
        "outer",
        "H",
        "workers",
        "tokens",
        "bytes/worker",
        "x vs DDP",
        "val",
        "gap %"
    );
    println!(
        "|{}|",
        ["-"; 10]
            .iter()
            .map(|_| "---")
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in rows {
        let ratio = r
            .ratio_vs_ddp
            .map_or("-".to_string(), |x| format!("{x:.1}"));
        println!(
            "| {:<14} | {:<34} | {:<30} | {:>3} | {:>7} | {:>10} | {:>14} | {:>10} | {:>8.4} | {:>+8.2} |",
            r.run, r.codec, r.outer, r.inner_steps, r.workers, r.tokens, r.bytes_per_worker, ratio, r.val_loss, r.gap_pct
        );
    }
}

fn write_plots(out: &Path, curves: &[Curve]) -> Result<()> {
    let by_tokens: Vec<(String, Vec<(f64, f64)>)> = curves
        .iter()
        .map(|c| {
            (
                c.label.clone(),
                c.points
                    .iter()
                    .map(|p| (p.tokens as f64, f64::from(p.val_loss)))
                    .collect(),
            )
        })
        .collect();
    fs::write(
        out.join("loss_vs_tokens.svg"),
        svg_plot("validation loss vs tokens", "tokens", false, &by_tokens),
    )?;
    let by_bytes: Vec<(String, Vec<(f64, f64)>)> = curves
        .iter()
        .filter(|c| c.points.iter().any(|p| p.bytes_per_worker > 0))
        .map(|c| {
            let points = c.points.iter().filter(|p| p.bytes_per_worker > 0);
            (
                c.label.clone(),
                points
                    .map(|p| (p.bytes_per_worker as f64, f64::from(p.val_loss)))
                    .collect(),
            )
        })
        .collect();
    fs::write(
        out.join("loss_vs_bytes.svg"),
        svg_plot(
            "validation loss vs bytes sent per worker",
            "bytes per worker (log)",
            true,
            &by_bytes,
        ),
    )?;
    Ok(())
}

/// A plain line chart as SVG text: one polyline per series, a legend, axis ranges as labels.
fn svg_plot(
    title: &str,
    x_label: &str,
    log_x: bool,
    series: &[(String, Vec<(f64, f64)>)],
) -> String {
    const COLORS: [&str; 8] = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    ];
    let (width, height, left, right, top, bottom) = (900.0, 540.0, 70.0, 330.0, 40.0, 50.0);
    let fx = |x: f64| if log_x { x.max(1.0).log10() } else { x };
    let points = series.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(fx(x));
        x1 = x1.max(fx(x));
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let sx = |x: f64| left + (fx(x) - x0) / (x1 - x0) * plot_w;
    let sy = |y: f64| top + (y1 - y) / (y1 - y0) * plot_h;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" font-size=\"15\">{title}</text>\n\
         <rect x=\"{left}\" y=\"{top}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" stroke=\"black\"/>\n",
        left
    );
    let x_text = |v: f64| {
        if log_x {
            format!("{:.3e}", 10f64.powf(v))
        } else {
            format!("{v:.3e}")
        }
    };
    for i in 0..=4 {
        let fraction = f64::from(i) / 4.0;
        let xv = x0 + fraction * (x1 - x0);
        let yv = y0 + fraction * (y1 - y0);
        let px = left + fraction * plot_w;
        let py = top + (1.0 - fraction) * plot_h;
        svg.push_str(&format!(
            "<line x1=\"{px}\" y1=\"{top}\" x2=\"{px}\" y2=\"{}\" stroke=\"#ddd\"/>\n<text x=\"{px}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            top + plot_h,
            top + plot_h + 16.0,
            x_text(xv)
        ));
        svg.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{py}\" x2=\"{}\" y2=\"{py}\" stroke=\"#ddd\"/>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{yv:.3}</text>\n",
            left + plot_w,
            left - 6.0,
            py + 4.0
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{x_label}</text>\n<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">validation loss (nats/token)</text>\n",
        left + plot_w / 2.0,
        height - 10.0,
        top + plot_h / 2.0,
        top + plot_h / 2.0
    ));
    for (index, (label, data)) in series.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let path: Vec<String> = data
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n",
            path.join(" ")
        ));
        let ly = top + 14.0 + index as f64 * 18.0;
        let lx = width - right + 12.0;
        svg.push_str(&format!(
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"3\"/>\n<text x=\"{}\" y=\"{}\">{}</text>\n",
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            xml_escape(label)
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_one_polyline_per_series() {
        let series = vec![
            ("a".to_string(), vec![(1.0, 3.0), (10.0, 2.0)]),
            ("b<c".to_string(), vec![(1.0, 2.5), (100.0, 1.5)]),
        ];
        let svg = svg_plot("t", "x", true, &series);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("b&lt;c"));
    }

    fn sync_args(extra: &[&str]) -> SyncArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            command: ExperimentCommand,
        }
        let base = ["x", "sync", "--tokens", "1", "--data", "d", "--out", "o"];
        let cli = <Cli as clap::Parser>::try_parse_from(base.iter().chain(extra)).expect("parses");
        match cli.command {
            ExperimentCommand::Sync(args) => args,
            ExperimentCommand::Attacks(_) => unreachable!("parsed a sync command"),
        }
    }

    #[test]
    fn runs_list_takes_defaults_from_the_flags() {
        let args = sync_args(&[
            "--inner-steps",
            "7",
            "--runs",
            "codec=fp32/h=10; codec=topk:k=32,bits=2/ef=0.9/outer_lr=0.8 ;h=3/ef=off;",
        ]);
        let runs = parse_runs(&args).unwrap();
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[0].inner_steps, 10);
        assert_eq!(runs[0].outer.name, "nesterov");
        assert_eq!((runs[0].outer.lr, runs[0].outer.ef_decay), (0.7, None));
        assert_eq!(runs[1].inner_steps, 7);
        assert_eq!(runs[1].outer.name, "sparseloco");
        assert_eq!((runs[1].outer.lr, runs[1].outer.ef_decay), (0.8, Some(0.9)));
        assert!(matches!(runs[1].codec, CodecKind::TopK(t) if t.k == 32));
        assert_eq!((runs[2].inner_steps, runs[2].outer.ef_decay), (3, None));
    }

    #[test]
    fn shards_are_disjoint_and_cover_the_split_either_way() {
        let train: Vec<u32> = (0..10_000).collect();
        for layout in [ShardLayout::Contiguous, ShardLayout::Interleaved] {
            let shards = split_shards(&train, 3, 3_333, layout, 7);
            assert_eq!(shards.len(), 3);
            let mut all: Vec<u32> = shards.concat();
            all.sort_unstable();
            assert_eq!(all, (0..9_999).collect::<Vec<u32>>(), "{layout:?}");
        }
        let interleaved = split_shards(&train, 3, 3_333, ShardLayout::Interleaved, 7);
        // Blocks of 32 windows of 8 tokens, dealt round-robin.
        assert_eq!(&interleaved[1][..2], &[256, 257]);
        assert_eq!(interleaved[0][256], 768);
    }

    #[test]
    fn outer_warmup_ramps_linearly_to_one() {
        let args = sync_args(&["--runs", "h=10/warmup=4; h=10"]);
        let runs = parse_runs(&args).unwrap();
        let scales: Vec<f32> = (0..6).map(|r| runs[0].outer.warmup_scale(r)).collect();
        assert_eq!(scales, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
        assert_eq!(runs[1].outer.warmup_scale(0), 1.0);
        assert!(runs[0].label().contains("warmup4"));
        assert!(!runs[1].label().contains("warmup"));
    }

    #[test]
    fn runs_list_rejects_bad_fields() {
        for bad in [
            "codec=nope",
            "h=0",
            "h=x",
            "speed=3",
            "ef=1.5",
            "outer=adam",
            "codec",
            ";",
        ] {
            let args = sync_args(&["--runs", bad]);
            assert!(parse_runs(&args).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn evaluation_hits_the_last_step() {
        let due: Vec<u64> = (0..10).filter(|&s| eval_due(s, 10, 3)).collect();
        assert_eq!(due, vec![2, 5, 8, 9]);
    }
}
