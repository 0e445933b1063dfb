//! A commonweight checkpoint loads in HF transformers (`LlamaForCausalLM.from_pretrained`) and
//! gives the same logits to 1e-4. Skips (passes, saying why) when the venv lacks transformers.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{batch, tiny_train_config};
use model::{Preset, Trainer};

fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if venv.exists() {
        return venv;
    }
    std::env::var_os("PYTHON_SYS_EXECUTABLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "python3".into())
}

/// HF logits for `tokens`, or None (skip) when transformers is not importable.
fn hf_logits(dir: &std::path::Path, tokens: &[u32]) -> Option<Vec<f32>> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/hf_logits.py");
    let output = match Command::new(python())
        .arg(script)
        .arg(dir)
        .args(tokens.iter().map(u32::to_string))
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            eprintln!("SKIP hf_compat: cannot run {}: {e}", python().display());
            return None;
        }
    };
    if output.status.code() == Some(3) {
        eprintln!(
            "SKIP hf_compat: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        return None;
    }
    assert!(
        output.status.success(),
        "hf_logits.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<Vec<f32>> = serde_json::from_slice(&output.stdout).expect("JSON logits");
    Some(rows.concat())
}

fn check(tie_word_embeddings: bool) {
    let mut config = Preset::Tiny.model_config(256);
    config.tie_word_embeddings = tie_word_embeddings;
    let train = tiny_train_config(3);
    let mut trainer = Trainer::new(config, train.clone(), 11, 1).unwrap();
    // A few steps so norm gains and every matrix move away from their initial values.
    for s in 0..3 {
        trainer.train_step(&batch(&train, s)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    trainer.save_checkpoint(dir.path(), None).unwrap();
    let prompt: Vec<u32> = "Shall I compare thee to a summer's day?"
        .bytes()
        .map(u32::from)
        .collect();
    let ours = model::load_model(dir.path())
        .unwrap()
        .logits(&prompt)
        .unwrap();
    let Some(theirs) = hf_logits(dir.path(), &prompt) else {
        return;
    };
    assert_eq!(ours.len(), theirs.len());
    let max_diff = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("tie_word_embeddings={tie_word_embeddings}: max |logit difference| = {max_diff:e}");
    assert!(max_diff <= 1e-4, "logits differ by {max_diff}");
}

#[test]
fn transformers_loads_checkpoint_and_matches_logits() {
    check(false);
    check(true);
}
