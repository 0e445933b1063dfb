//! `commonweight train`: prepare data, train a preset, validate, checkpoint, log metrics.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use data::{PreparedDataset, TokenizerSpec};
use model::{Preset, TrainConfig, Trainer};

use crate::data_dir::DataDirArgs;

/// Share of every document held out for validation when `--data` is raw text.
const VAL_FRACTION: f64 = 0.05;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Training text: a .txt/.jsonl/.parquet file, a folder of them, or a prepared dataset folder.
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// Model size: tiny, micro, mini, small, base or 1b.
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// Optimizer steps in total (the cosine schedule ends here).
    #[arg(long)]
    pub steps: u64,
    /// Checkpoint folder (HF layout) and metrics.jsonl.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Tokenizer: bytes, gpt2 or bpe:N.
    #[arg(long, default_value = "bytes")]
    pub tokenizer: String,
    /// libtorch threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Override the preset's sequences per micro-batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Override the preset's sequence length.
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Override the preset's peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Micro-batches per optimizer step.
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Validate and checkpoint every N steps (default: steps/10).
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Write a metrics line every N steps.
    #[arg(long, default_value_t = 10)]
    pub log_every: u64,
    /// Validation tokens used by periodic evals (0 = the whole split). The final eval always
    /// uses the whole split.
    #[arg(long, default_value_t = 65536)]
    pub val_tokens: usize,
    #[command(flatten)]
    pub shape: ShapeArgs,
    #[command(flatten)]
    pub data_dir: DataDirArgs,
}

/// Overrides of the preset's model shape, for sizing a model to a compute budget.
#[derive(clap::Args, Debug, Default)]
pub struct ShapeArgs {
    /// Override the preset's hidden size (d_model).
    #[arg(long)]
    pub hidden_size: Option<usize>,
    /// Override the preset's MLP width.
    #[arg(long)]
    pub intermediate_size: Option<usize>,
    /// Override the preset's layer count.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Override the preset's attention head count.
    #[arg(long)]
    pub heads: Option<usize>,
    /// Override the preset's key/value head count (grouped-query attention).
    #[arg(long)]
    pub kv_heads: Option<usize>,
}

impl ShapeArgs {
    /// The preset's shape with the overrides applied, long enough for `seq_len`, and validated.
    pub fn apply(
        &self,
        mut model: model::ModelConfig,
        seq_len: usize,
    ) -> Result<model::ModelConfig> {
        model.hidden_size = self.hidden_size.unwrap_or(model.hidden_size);
        model.intermediate_size = self.intermediate_size.unwrap_or(model.intermediate_size);
        model.num_hidden_layers = self.layers.unwrap_or(model.num_hidden_layers);
        model.num_attention_heads = self.heads.unwrap_or(model.num_attention_heads);
        model.num_key_value_heads = self.kv_heads.unwrap_or(model.num_key_value_heads);
        model.max_position_embeddings = model.max_position_embeddings.max(seq_len);
        model.validate().context("model shape")?;
        Ok(model)
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    let preset = Preset::parse(&args.preset)?;
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if args.log_every == 0 {
        bail!("--log-every must be at least 1");
    }
    let threads = args.threads.unwrap_or_else(default_threads);
    let dataset = open_or_prepare(&args)?;
    let tokenizer_json = std::fs::read_to_string(dataset.tokenizer_path())
        .with_context(|| format!("reading {}", dataset.tokenizer_path().display()))?;
    let train_tokens = dataset.train_tokens()?;
    let val_tokens = dataset.val_tokens()?;
    let train_config = train_config(&args, preset);
    let model_config = args.shape.apply(
        preset.model_config(dataset.vocab_size()),
        train_config.seq_len,
    )?;
    let mut trainer = open_trainer(&args, model_config, train_config.clone(), threads)?;
    let eval_every = args.eval_every.unwrap_or((args.steps / 10).max(1)).max(1);
    let mut metrics = open_metrics(&args.out, args.resume)?;
    eprintln!(
        "training {} ({} params) on {} train / {} val tokens, {} threads, {} tokens/step",
        preset.name(),
        trainer.param_count(),
        train_tokens.len(),
        val_tokens.len(),
        threads,
        train_config.tokens_per_step()
    );
    let rows = train_config.batch_size * train_config.grad_accum;
    let tokens_per_step = (rows * train_config.seq_len) as u64;
    let bar = progress_bar(args.steps, trainer.step());
    let mut train_secs = 0.0f64;
    let mut trained_steps = 0u64;
    while trainer.step() < args.steps {
        let step = trainer.step();
        let batch = data::sample_batch(args.seed, &train_tokens, step, rows, train_config.seq_len)?;
        let started = Instant::now();
        let loss = trainer.train_step(&batch)?;
        train_secs += started.elapsed().as_secs_f64();
        trained_steps += 1;
        let done = trainer.step();
        let tokens_per_s = (trained_steps * tokens_per_step) as f64 / train_secs.max(1e-9);
        bar.set_position(done);
        bar.set_message(format!("loss {loss:.3}  {tokens_per_s:.0} tok/s"));
        let last = done == args.steps;
        let eval_now = done % eval_every == 0 || last;
        let mut val = None;
        if eval_now {
            let cap = if last { 0 } else { args.val_tokens };
            let val_loss = eval_split(&trainer, &val_tokens, cap)?;
            let bpb = dataset.val_bits_per_byte(val_loss);
            bar.println(format!(
                "step {done}: val {val_loss:.4} nats/token, {bpb:.4} bits/byte"
            ));
            val = Some((val_loss, bpb));
            trainer.save_checkpoint(&args.out, Some(&tokenizer_json))?;
        }
        if done % args.log_every == 0 || eval_now {
            let line = serde_json::json!({
                "step": done,
                "tokens": done * tokens_per_step,
                "loss": loss,
                "val_loss": val.map(|v| v.0),
                "val_bits_per_byte": val.map(|v| v.1),
                "tokens_per_s": tokens_per_s,
                "lr": train_config.lr_at(done),
            });
            writeln!(metrics, "{line}").context("writing metrics.jsonl")?;
            metrics.flush().context("writing metrics.jsonl")?;
        }
    }
    bar.finish();
    eprintln!("checkpoint in {}", args.out.display());
    Ok(())
}

pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn train_config(args: &TrainArgs, preset: Preset) -> TrainConfig {
    let mut config = preset.train_config(args.steps);
    config.batch_size = args.batch_size.unwrap_or(config.batch_size);
    config.seq_len = args.seq_len.unwrap_or(config.seq_len);
    config.lr = args.lr.unwrap_or(config.lr);
    config.grad_accum = args.grad_accum.unwrap_or(config.grad_accum);
    config
}

/// A prepared dataset folder is used as is; raw text is prepared (idempotently) under
/// `<data-dir>/datasets/<key>`, the key hashing the input path and tokenizer.
fn open_or_prepare(args: &TrainArgs) -> Result<PreparedDataset> {
    if !args.data.exists() {
        bail!("--data {}: no such file or folder", args.data.display());
    }
    if args.data.join(data::prepare::DATASET_JSON).is_file() {
        return PreparedDataset::open(&args.data)
            .with_context(|| format!("opening dataset {}", args.data.display()));
    }
    let spec = TokenizerSpec::parse(&args.tokenizer)
        .with_context(|| format!("--tokenizer {}", args.tokenizer))?;
    let canonical = args
        .data
        .canonicalize()
        .with_context(|| format!("--data {}", args.data.display()))?;
    let key = types::Hash32::of(format!("{}\n{}", canonical.display(), args.tokenizer).as_bytes());
    let out = args
        .data_dir
        .resolve()?
        .join("datasets")
        .join(&key.to_hex()[..16]);
    eprintln!(
        "preparing {} with tokenizer {} into {}",
        args.data.display(),
        args.tokenizer,
        out.display()
    );
    let prepared = data::prepare(&[canonical], spec, &out, VAL_FRACTION, args.seed)?;
    Ok(prepared)
}

fn open_trainer(
    args: &TrainArgs,
    model_config: model::ModelConfig,
    train: TrainConfig,
    threads: usize,
) -> Result<Trainer> {
    let has_checkpoint = args.out.join(model::checkpoint::TRAINER_FILE).is_file();
    if args.resume {
        if !has_checkpoint {
            bail!(
                "--resume: {} holds no checkpoint to resume",
                args.out.display()
            );
        }
        let trainer = Trainer::resume(&args.out, Some(train), threads)?;
        if trainer.model_config() != &model_config {
            bail!(
                "--resume: the checkpoint in {} is not a {} model of this shape for this tokenizer",
                args.out.display(),
                args.preset
            );
        }
        return Ok(trainer);
    }
    if has_checkpoint {
        bail!(
            "{} already holds a checkpoint; pass --resume or choose another --out",
            args.out.display()
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    Ok(Trainer::new(model_config, train, args.seed, threads)?)
}

fn open_metrics(out: &Path, resume: bool) -> Result<std::fs::File> {
    let path = out.join("metrics.jsonl");
    let mut options = std::fs::OpenOptions::new();
    options.create(true);
    if resume {
        options.append(true);
    } else {
        options.write(true).truncate(true);
    }
    options
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

fn progress_bar(total: u64, at: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    let style =
        indicatif::ProgressStyle::with_template("{bar:30} step {pos}/{len}  {msg}  ETA {eta}")
            .expect("valid template");
    bar.set_style(style);
    bar.set_position(at);
    bar
}

/// Mean loss (nats/token) over non-overlapping rows of the val split; `cap` tokens (0 = all).
pub fn eval_split(trainer: &Trainer, val: &[u32], cap: usize) -> Result<f64> {
    let config = trainer.train_config();
    let row = config.seq_len + 1;
    let tokens = if cap == 0 {
        val
    } else {
        &val[..cap.min(val.len())]
    };
    let rows = tokens.len() / row;
    if rows == 0 {
        bail!(
            "the validation split has {} tokens, fewer than one {row}-token row",
            tokens.len()
        );
    }
    let mut total = 0.0f64;
    let mut counted = 0usize;
    for chunk in tokens[..rows * row].chunks(config.batch_size * row) {
        let chunk_rows = chunk.len() / row;
        total += trainer.eval_loss(chunk)? as f64 * chunk_rows as f64;
        counted += chunk_rows;
    }
    Ok(total / counted as f64)
}
