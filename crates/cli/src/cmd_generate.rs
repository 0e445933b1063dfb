//! `commonweight generate`: sample text from a checkpoint folder.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Checkpoint folder (model.safetensors, config.json, tokenizer.json).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    #[arg(long)]
    pub prompt: String,
    /// Tokens to sample.
    #[arg(long, default_value_t = 200)]
    pub tokens: usize,
    /// 0 samples greedily.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Sample from the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        bail!("--temperature must be a finite number >= 0");
    }
    let tokenizer_path = args.checkpoint.join(model::checkpoint::TOKENIZER_FILE);
    if !args.checkpoint.is_dir() {
        bail!("--checkpoint {}: not a folder", args.checkpoint.display());
    }
    let tokenizer = data::Tokenizer::load(&tokenizer_path)
        .with_context(|| format!("loading {}", tokenizer_path.display()))?;
    let lm = model::load_model(&args.checkpoint)?;
    if tokenizer.vocab_size() > lm.config().vocab_size {
        bail!(
            "tokenizer has {} symbols but the model only {}",
            tokenizer.vocab_size(),
            lm.config().vocab_size
        );
    }
    let prompt = tokenizer.encode(&args.prompt)?;
    let sampled = lm.generate(
        &prompt,
        args.tokens,
        args.temperature,
        args.top_k,
        args.seed,
    )?;
    println!("{}{}", args.prompt, tokenizer.decode(&sampled)?);
    Ok(())
}
