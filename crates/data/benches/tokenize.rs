//! Benchmark: tokenizer throughput and corpus statistics on the Shakespeare corpus, for `bytes`,
//! `gpt2` and `bpe:4096`, each against references measured in the same run:
//! raw `tokenizers` (`encode_fast` per document, one thread), tiktoken-rs's GPT-2 encoding
//! (`r50k_base`) for `gpt2`, and a plain byte copy for `bytes`. Also times BPE training, the whole
//! `prepare`, and shard decoding against plain BLAKE3 over the same bytes.
//!
//! Run: `cargo bench -p commonweight-data --bench tokenize` (corpus folder from
//! `COMMONWEIGHT_CORPUS`, else `data/shakespeare` in the workspace).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use data::tokenizer::{Tokenizer, TokenizerSpec};

const REPEATS: usize = 3;

fn corpus_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("COMMONWEIGHT_CORPUS") {
        return PathBuf::from(dir);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for candidate in [
        workspace.join("data/shakespeare"),
        PathBuf::from("/work/shared/data/shakespeare"),
    ] {
        if candidate.is_dir() {
            return candidate;
        }
    }
    eprintln!("no corpus: set COMMONWEIGHT_CORPUS=DIR or run `cargo xtask setup`");
    std::process::exit(1);
}

fn read_corpus(dir: &Path) -> Vec<String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("corpus folder")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("UTF-8 text"))
        .collect()
}

/// Best of `REPEATS` runs (least disturbed by other processes on the machine).
fn best_of<T>(mut run: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut result = None;
    for _ in 0..REPEATS {
        let start = Instant::now();
        let value = run();
        best = best.min(start.elapsed());
        result = Some(value);
    }
    (best, result.expect("REPEATS > 0"))
}

fn mib_per_s(bytes: usize, time: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / time.as_secs_f64()
}

fn main() {
    let dir = corpus_dir();
    let documents = read_corpus(&dir);
    let texts: Vec<&str> = documents.iter().map(String::as_str).collect();
    let bytes: usize = texts.iter().map(|t| t.len()).sum();
    println!(
        "corpus {}: {} documents, {} bytes",
        dir.display(),
        texts.len(),
        bytes
    );
    println!(
        "threads available: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    for spec in ["bytes", "gpt2", "bpe:4096"] {
        let spec = TokenizerSpec::parse(spec).unwrap();
        let train_start = Instant::now();
        let tokenizer = Tokenizer::from_spec(spec, &texts).unwrap();
        let build_time = train_start.elapsed();

        let (raw_time, raw_ids) = best_of(|| {
            texts
                .iter()
                .map(|t| {
                    tokenizer
                        .hf()
                        .encode_fast(*t, false)
                        .unwrap()
                        .get_ids()
                        .to_vec()
                })
                .collect::<Vec<_>>()
        });
        let (ours_time, our_ids) = best_of(|| {
            texts
                .iter()
                .map(|t| tokenizer.encode(t).unwrap())
                .collect::<Vec<_>>()
        });
        let (batch_time, batch_ids) = best_of(|| tokenizer.encode_batch(&texts).unwrap());
        assert_eq!(raw_ids, our_ids);
        assert_eq!(raw_ids, batch_ids);
        let tokens: usize = our_ids.iter().map(Vec::len).sum();

        println!();
        println!(
            "== {spec} (vocab {}, built in {:.2} s)",
            tokenizer.vocab_size(),
            build_time.as_secs_f64()
        );
        println!(
            "tokens {tokens}, bytes/token {:.3}",
            bytes as f64 / tokens as f64
        );
        println!(
            "reference tokenizers encode_fast, 1 thread: {:8.2} MiB/s",
            mib_per_s(bytes, raw_time)
        );
        println!(
            "ours Tokenizer::encode, 1 thread:          {:8.2} MiB/s  ratio {:.3}",
            mib_per_s(bytes, ours_time),
            raw_time.as_secs_f64() / ours_time.as_secs_f64()
        );
        println!(
            "ours Tokenizer::encode_batch, pool:        {:8.2} MiB/s  ratio {:.3}",
            mib_per_s(bytes, batch_time),
            raw_time.as_secs_f64() / batch_time.as_secs_f64()
        );
        match spec {
            TokenizerSpec::Gpt2 => {
                let reference = tiktoken_rs::r50k_base().unwrap();
                let (tik_time, tik_ids) = best_of(|| {
                    texts
                        .iter()
                        .map(|t| reference.encode_ordinary(t))
                        .collect::<Vec<_>>()
                });
                let same = tik_ids.iter().zip(&our_ids).all(|(a, b)| {
                    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| *x as u32 == *y)
                });
                println!(
                    "reference tiktoken-rs r50k_base, 1 thread: {:8.2} MiB/s  (ours/tiktoken {:.3}; ids identical: {same})",
                    mib_per_s(bytes, tik_time),
                    tik_time.as_secs_f64() / ours_time.as_secs_f64()
                );
            }
            TokenizerSpec::Bytes => {
                let (copy_time, copy_ids) = best_of(|| {
                    texts
                        .iter()
                        .map(|t| t.bytes().map(u32::from).collect::<Vec<_>>())
                        .collect::<Vec<_>>()
                });
                println!(
                    "reference byte copy, 1 thread:             {:8.2} MiB/s  (ours/copy {:.4}; ids identical: {})",
                    mib_per_s(bytes, copy_time),
                    copy_time.as_secs_f64() / ours_time.as_secs_f64(),
                    copy_ids == our_ids
                );
            }
            TokenizerSpec::Bpe { .. } => {}
        }

        let out = std::env::temp_dir().join(format!(
            "cw-data-bench-{}-{}",
            std::process::id(),
            spec.to_string().replace(':', "_")
        ));
        let prepare_start = Instant::now();
        let prepared = data::prepare(&[dir.clone()], spec, &out, 0.1, 0).unwrap();
        let prepare_time = prepare_start.elapsed();
        let reuse_start = Instant::now();
        let reused = data::prepare(&[dir.clone()], spec, &out, 0.1, 0).unwrap();
        let reuse_time = reuse_start.elapsed();
        assert!(reused.reused);
        let m = &prepared.manifest;
        println!(
            "prepare (val 0.1): {:.2} s, again (reused) {:.3} s; train {} bytes {} tokens; val {} bytes {} tokens; val bytes/token {:.3}",
            prepare_time.as_secs_f64(),
            reuse_time.as_secs_f64(),
            m.train.bytes,
            m.train.tokens,
            m.val.bytes,
            m.val.tokens,
            m.val.bytes as f64 / m.val.tokens as f64
        );
        let shard_bytes = std::fs::read(prepared.train_shard_paths()[0].clone()).unwrap();
        let (decode_time, _) = best_of(|| data::decode_shard(&shard_bytes).unwrap());
        let (hash_time, _) = best_of(|| blake3::hash(&shard_bytes));
        println!(
            "shard decode {:.0} MiB/s vs plain BLAKE3 {:.0} MiB/s (ratio {:.3})",
            mib_per_s(shard_bytes.len(), decode_time),
            mib_per_s(shard_bytes.len(), hash_time),
            hash_time.as_secs_f64() / decode_time.as_secs_f64()
        );
        std::fs::remove_dir_all(&out).unwrap();
    }
}
