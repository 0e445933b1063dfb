//! Benchmark of the cheap per-update gates on a dense update, against a reference measured in the same run
//! (copying the blob once). Prints milliseconds and ratios. `COMMONWEIGHT_BENCH_PARAMS` sets the update size.

use std::hint::black_box;
use std::time::Instant;

use types::Hash32;
use verify::pipeline::{encode_dense_f32, DenseF32Decoder};
use verify::{sanity, similarity, UpdateDecoder};

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> f64 {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            black_box(f());
            start.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let n: usize = std::env::var("COMMONWEIGHT_BENCH_PARAMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let update: Vec<f32> = (0..n)
        .map(|i| ((i as u64 * 2_654_435_761) % 1000) as f32 * 1e-3 - 0.5)
        .collect();
    let blob = encode_dense_f32(&update);
    let reference = best_of(5, || blob.clone());
    let rows = [
        ("cid (blake3 of blob)", best_of(5, || Hash32::of(&blob))),
        (
            "decode dense f32",
            best_of(5, || DenseF32Decoder.decode(0, &blob, n).unwrap()),
        ),
        (
            "nan/inf scan",
            best_of(5, || sanity::first_non_finite(&update)),
        ),
        ("l2 norm", best_of(5, || sanity::l2_norm(&update))),
        (
            "sketch (count sketch + top-k)",
            best_of(3, || similarity::sketch(&update, 9)),
        ),
    ];
    println!(
        "update of {n} f32 ({:.1} MB); reference: copy the blob = {reference:.2} ms",
        blob.len() as f64 / 1e6
    );
    println!("{:<32} {:>10} {:>16}", "gate", "ms", "x reference");
    for (name, ms) in rows {
        println!("{name:<32} {ms:>10.2} {:>16.2}", ms / reference);
    }
}
