//! Build script: finds GPT-2's `encoder.json` and `vocab.bpe` inside the `tiktoken-rs` crate source.
//!
//! Cargo does not tell a build script where a dependency's source lives, so we look in the
//! registry source folders under `$CARGO_HOME` (default `~/.cargo`). The version is pinned with
//! `=` in Cargo.toml so the folder name is exact. The paths go to `include_bytes!` through
//! `rustc-env`, so the files are embedded in the binary and nothing is read at run time.
//! `COMMONWEIGHT_GPT2_ASSETS=DIR` overrides the search (a folder holding both files).

use std::path::{Path, PathBuf};

const TIKTOKEN_CRATE_DIR: &str = "tiktoken-rs-0.12.1";

fn main() {
    println!("cargo:rerun-if-env-changed=COMMONWEIGHT_GPT2_ASSETS");
    println!("cargo:rerun-if-env-changed=CARGO_HOME");
    let dir = find_assets_dir().unwrap_or_else(|| {
        panic!(
            "could not find {TIKTOKEN_CRATE_DIR}/assets (encoder.json, vocab.bpe) under \
             $CARGO_HOME/registry/src/*/; run `cargo fetch`, or set COMMONWEIGHT_GPT2_ASSETS=DIR"
        )
    });
    for (env, file) in [
        ("CW_GPT2_ENCODER_JSON", "encoder.json"),
        ("CW_GPT2_VOCAB_BPE", "vocab.bpe"),
    ] {
        let path = dir.join(file);
        println!("cargo:rerun-if-changed={}", path.display());
        println!("cargo:rustc-env={env}={}", path.display());
    }
}

fn find_assets_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("COMMONWEIGHT_GPT2_ASSETS") {
        return Some(PathBuf::from(dir)).filter(|d| has_assets(d));
    }
    let cargo_home = match std::env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cargo"),
    };
    let mut registries: Vec<PathBuf> = std::fs::read_dir(cargo_home.join("registry/src"))
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    // Sorted so that the choice is the same on every build.
    registries.sort();
    registries
        .into_iter()
        .map(|registry| registry.join(TIKTOKEN_CRATE_DIR).join("assets"))
        .find(|dir| has_assets(dir))
}

fn has_assets(dir: &Path) -> bool {
    dir.join("encoder.json").is_file() && dir.join("vocab.bpe").is_file()
}
