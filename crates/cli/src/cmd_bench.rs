//! `commonweight bench train`: commonweight's trainer against the PyTorch reference
//! (bench/train_reference.py), same model, init, batches, optimizer and threads, interleaved.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use model::{Preset, Trainer};

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Training throughput: commonweight vs the PyTorch reference, side by side.
    Train(BenchTrainArgs),
}

#[derive(clap::Args, Debug)]
pub struct BenchTrainArgs {
    #[arg(long, default_value = "small")]
    pub preset: String,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Timed steps per round and side (after one untimed warmup step).
    #[arg(long, default_value_t = 5)]
    pub steps: u64,
    /// Rounds; each runs commonweight then the reference, so load drifts hit both.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Override the preset's batch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Python with torch (default: ./.venv/bin/python, else python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
    #[arg(long, default_value = "bench/train_reference.py")]
    pub reference: PathBuf,
}

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Train(args) => bench_train(args),
    }
}

struct Side {
    tokens_per_s: Vec<f64>,
    losses: Vec<f64>,
    peak_rss_bytes: u64,
}

fn bench_train(args: BenchTrainArgs) -> Result<()> {
    let preset = Preset::parse(&args.preset)?;
    if args.steps == 0 || args.rounds == 0 || args.threads == 0 {
        bail!("--steps, --rounds and --threads must be at least 1");
    }
    if !args.reference.is_file() {
        bail!(
            "reference script {} not found (run from the repository root)",
            args.reference.display()
        );
    }
    let python = args.python.clone().unwrap_or_else(default_python);
    let model_config = preset.model_config(256);
    let mut train = preset.train_config(args.steps + 1);
    train.batch_size = args.batch_size.unwrap_or(train.batch_size);
    let dir = tempfile::tempdir().context("creating a temporary folder")?;
    let init = model::init_params(&model_config, 0);
    let batches = synthetic_batches(train.tokens_per_step() * (args.steps as usize + 1));
    write_inputs(dir.path(), &model_config, &train, &init, &batches)?;
    let param_count = init.len();
    let tokens_per_step = (train.batch_size * train.grad_accum * train.seq_len) as f64;
    println!(
        "bench train: preset {} ({param_count} params), {} threads, {} tokens/step, {} timed steps x {} rounds",
        preset.name(),
        args.threads,
        tokens_per_step,
        args.steps,
        args.rounds
    );
    let peak_flops = model::measure_peak_matmul_flops(args.threads, 2048, 5);
    let mut ours = Side {
        tokens_per_s: vec![],
        losses: vec![],
        peak_rss_bytes: 0,
    };
    let mut reference = Side {
        tokens_per_s: vec![],
        losses: vec![],
        peak_rss_bytes: 0,
    };
    for round in 0..args.rounds {
        let (tps, losses) = run_ours(
            &model_config,
            &train,
            &init,
            &batches,
            args.steps,
            args.threads,
        )?;
        ours.tokens_per_s.push(tps);
        ours.losses = losses;
        ours.peak_rss_bytes = peak_rss_self();
        let (tps_ref, losses_ref, rss_ref) = run_reference(
            &python,
            &args.reference,
            dir.path(),
            args.steps,
            args.threads,
        )?;
        reference.tokens_per_s.push(tps_ref);
        reference.losses = losses_ref;
        reference.peak_rss_bytes = reference.peak_rss_bytes.max(rss_ref);
        println!(
            "round {round}: commonweight {tps:.0} tok/s, pytorch {tps_ref:.0} tok/s, ratio {:.3}",
            tps / tps_ref
        );
    }
    let ours_tps = median(&ours.tokens_per_s);
    let ref_tps = median(&reference.tokens_per_s);
    let flops_per_token = 6.0 * param_count as f64;
    let loss_diff = ours
        .losses
        .iter()
        .zip(&reference.losses)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    println!(
        "measured peak (2048^3 f32 matmul, {} threads): {:.1} GFLOP/s",
        args.threads,
        peak_flops / 1e9
    );
    println!(
        "commonweight: {ours_tps:.0} tok/s (median), MFU {:.1}%, peak RSS {:.0} MiB",
        100.0 * ours_tps * flops_per_token / peak_flops,
        ours.peak_rss_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "pytorch ref : {ref_tps:.0} tok/s (median), MFU {:.1}%, peak RSS {:.0} MiB",
        100.0 * ref_tps * flops_per_token / peak_flops,
        reference.peak_rss_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "ratio commonweight/pytorch: {:.3} (goal >= 0.95)",
        ours_tps / ref_tps
    );
    println!(
        "same model check: max |loss difference| over {} steps = {loss_diff:.2e}",
        ours.losses.len()
    );
    Ok(())
}

fn default_python() -> PathBuf {
    let venv = PathBuf::from(".venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// Uniform random bytes from a fixed xorshift: the benchmark needs real shapes, not text.
fn synthetic_batches(count: usize) -> Vec<u32> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u32
        })
        .collect()
}

fn write_inputs(
    dir: &Path,
    config: &model::ModelConfig,
    train: &model::TrainConfig,
    init: &[f32],
    batches: &[u32],
) -> Result<()> {
    let specs = model::layout(config);
    let tensors: Vec<(&str, &[usize], &[f32])> = specs
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.shape.as_slice(),
                &init[s.offset..s.offset + s.numel()],
            )
        })
        .collect();
    model::safetensors::write(&dir.join("init.safetensors"), &tensors)?;
    std::fs::write(dir.join("config.json"), config.to_hf_json())?;
    std::fs::write(dir.join("train.json"), serde_json::to_string(train)?)?;
    let bytes: Vec<u8> = batches.iter().flat_map(|t| t.to_le_bytes()).collect();
    std::fs::write(dir.join("tokens.bin"), bytes)?;
    Ok(())
}

fn run_ours(
    config: &model::ModelConfig,
    train: &model::TrainConfig,
    init: &[f32],
    batches: &[u32],
    steps: u64,
    threads: usize,
) -> Result<(f64, Vec<f64>)> {
    let mut trainer = Trainer::with_params(config.clone(), train.clone(), init, threads)?;
    let per_step = train.tokens_per_step();
    let mut losses = vec![];
    let mut seconds = 0.0;
    for (step, batch) in batches.chunks(per_step).enumerate() {
        let started = Instant::now();
        losses.push(trainer.train_step(batch)? as f64);
        if step > 0 {
            seconds += started.elapsed().as_secs_f64();
        }
    }
    let tokens = (train.batch_size * train.grad_accum * train.seq_len) as f64 * steps as f64;
    Ok((tokens / seconds, losses))
}

fn run_reference(
    python: &Path,
    script: &Path,
    dir: &Path,
    steps: u64,
    threads: usize,
) -> Result<(f64, Vec<f64>, u64)> {
    let output = Command::new(python)
        .arg(script)
        .args(["--dir".as_ref(), dir.as_os_str()])
        .args([
            "--steps",
            &steps.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "reference failed: {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let line = String::from_utf8_lossy(&output.stdout);
    let value: serde_json::Value =
        serde_json::from_str(line.trim()).context("parsing the reference's JSON")?;
    let tps = value["tokens_per_s"]
        .as_f64()
        .context("tokens_per_s missing")?;
    let losses = value["losses"]
        .as_array()
        .context("losses missing")?
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    let rss = value["peak_rss_bytes"].as_u64().unwrap_or(0);
    Ok((tps, losses, rss))
}

/// VmHWM of this process (Linux), in bytes; 0 where unavailable.
fn peak_rss_self() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}
